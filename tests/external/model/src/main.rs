//! The smallest useful program over `gear-model`: embed two texts with the pretrained MiniLM
//! (installed by `cargo xtask setup`) and print their cosine.

use gear_model::{pretrained, EncoderOptions, SentenceEncoder};

fn main() -> gear_model::Result<()> {
    let encoder = SentenceEncoder::load(pretrained::minilm_dir()?, &EncoderOptions::default())?;
    let e = encoder.embed(&["Where is the Eiffel tower?", "The Eiffel tower is in Paris."])?;
    println!("cosine {:.3}", e.get(0).dot(&e.get(1)).double_value(&[]));
    Ok(())
}
