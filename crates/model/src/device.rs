//! Parsing a device name (`cpu`, `cuda`, `cuda:1`) into a checked [`tch::Device`].

use tch::Device;

use crate::{Error, Result};

/// Parses `cpu`, `cuda` or `cuda:N`, checking that a CUDA device exists.
pub fn parse_device(name: &str) -> Result<Device> {
    let err = |message: String| Error::Device {
        device: name.to_owned(),
        message,
    };
    let index = match name.trim() {
        "cpu" => return Ok(Device::Cpu),
        "cuda" => 0,
        other => match other.strip_prefix("cuda:") {
            Some(n) => n
                .parse::<usize>()
                .map_err(|_| err("expected `cuda:N` with N a device index".into()))?,
            None => return Err(err("expected `cpu`, `cuda` or `cuda:N`".into())),
        },
    };
    if !tch::Cuda::is_available() {
        return Err(err(
            "CUDA is not available: no GPU, or the binary was built against a CPU-only libtorch \
             (libtorch_cuda.so not linked)"
                .into(),
        ));
    }
    let count = tch::Cuda::device_count() as usize;
    if index >= count {
        return Err(err(format!("only {count} CUDA device(s) present")));
    }
    Ok(Device::Cuda(index))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cpu_and_rejects_nonsense() {
        assert_eq!(parse_device("cpu").unwrap(), Device::Cpu);
        assert!(parse_device("gpu").unwrap_err().to_string().contains("gpu"));
        assert!(parse_device("cuda:x").is_err());
    }
}
