//! The argument types every command shares, parsed once into the library's own types: the
//! device, the two ways of choosing a model (a sentence encoder, or a GeAR model), and the
//! closed sets of values (`ValueEnum`s) with their conversions. Commands flatten these rather
//! than repeat them, so a flag reads, defaults and validates the same everywhere.

use std::path::PathBuf;
use std::str::FromStr;

use anyhow::{bail, Context, Result};
use gear_infer::{load_model, Backend, HnswConfig, ModelSource};
use gear_model::{pretrained, EncoderOptions, GearModel, SentenceEncoder, UnitAggregation};
use tch::Device;

/// `--device`: where the model runs. Parsed (and refused when unknown) by clap.
#[derive(clap::Args, Debug, Clone, Copy)]
pub struct DeviceArg {
    /// `cpu`, `cuda` or `cuda:N`.
    #[arg(long = "device", default_value = "cpu", value_parser = device)]
    device: Device,
}

impl DeviceArg {
    /// The device.
    pub fn get(self) -> Device {
        self.device
    }
}

/// clap's parser for [`DeviceArg`].
fn device(s: &str) -> Result<Device, String> {
    gear_model::parse_device(s).map_err(|e| e.to_string())
}

/// A count option within `range` (`-k`, `--beams`, batch sizes, limits). Every numeric option
/// has a stated upper bound: far above any real use, far below a value that would wrap in
/// arithmetic or ask an allocator for more than the machine has (`-k` near 2⁶⁴ used to wrap to
/// one result, `--max-body-kib 2⁵⁴` to a zero limit, `--ef-search 10¹²` to an out-of-memory
/// abort). The error names the option and the range.
pub fn count(
    range: std::ops::RangeInclusive<u64>,
) -> impl clap::builder::TypedValueParser<Value = usize> {
    use clap::builder::TypedValueParser;
    clap::value_parser!(u64)
        .range(range)
        // The bounds are far below usize::MAX on every supported target.
        .map(|n| usize::try_from(n).unwrap_or(usize::MAX))
}

/// Texts, pairs or triples per forward pass.
pub const MAX_BATCH: u64 = 65_536;

/// A sentence encoder (`gear embed`, `gear demo`, RIR's relevance filter, bi-encoder mining).
#[derive(clap::Args, Debug, Clone)]
pub struct EncoderArgs {
    /// Model folder (config.json, model.safetensors, tokenizer.json). Default: the pretrained
    /// all-MiniLM-L6-v2 installed by `cargo xtask setup`.
    #[arg(long)]
    model: Option<PathBuf>,
    /// Token limit per text, special tokens included; longer texts are truncated. Default: the
    /// model's `max_seq_length` (256 for MiniLM).
    #[arg(long, value_parser = count(1..=1_000_000))]
    max_len: Option<usize>,
    /// Texts per forward pass.
    #[arg(long, default_value_t = 32, value_parser = count(1..=MAX_BATCH))]
    pub batch_size: usize,
    #[command(flatten)]
    pub device: DeviceArg,
    #[command(flatten)]
    pub precision: InferencePrecision,
    /// Intra-op threads for libtorch (default: libtorch's choice, one per core).
    #[arg(long, value_parser = clap::value_parser!(i32).range(1..=4096))]
    threads: Option<i32>,
}

impl EncoderArgs {
    /// Loads the encoder these options describe.
    pub fn load(&self) -> Result<SentenceEncoder> {
        if let Some(n) = self.threads {
            tch::set_num_threads(n);
        }
        let dir = match &self.model {
            Some(dir) => dir.clone(),
            None => pretrained::minilm_dir()?,
        };
        let device = self.device.get();
        let precision = self.precision.checked(device)?;
        let opts = EncoderOptions {
            max_len: self.max_len,
            device,
            batch_size: self.batch_size,
            precision,
        };
        SentenceEncoder::load(&dir, &opts)
            .with_context(|| format!("loading the model in {}", dir.display()))
    }
}

/// A GeAR model: a checkpoint, or the pretrained bi-encoder with untrained cross-attention and
/// decoder.
#[derive(clap::Args, Debug, Clone)]
pub struct GearModelArgs {
    /// GeAR checkpoint folder (e.g. out/train-rir/run/checkpoint/model).
    #[arg(long, conflicts_with = "pretrained")]
    model: Option<PathBuf>,
    /// Use the pretrained all-MiniLM-L6-v2 (cross-attention and decoder untrained).
    #[arg(long)]
    pretrained: bool,
    #[command(flatten)]
    pub device: DeviceArg,
    #[command(flatten)]
    pub precision: InferencePrecision,
}

impl GearModelArgs {
    /// Whether `--model` or `--pretrained` was given.
    pub fn given(&self) -> bool {
        self.model.is_some() || self.pretrained
    }

    /// Loads the chosen model on the chosen device in the chosen precision, with the folder it
    /// came from.
    pub fn load(&self) -> Result<(GearModel, PathBuf)> {
        let device = self.device.get();
        let precision = self.precision.checked(device)?;
        let (mut model, dir) = load_model(&self.source()?, device)?;
        model.set_precision(precision);
        Ok((model, dir))
    }

    fn source(&self) -> Result<ModelSource> {
        match (&self.model, self.pretrained) {
            (Some(dir), false) => Ok(ModelSource::Checkpoint(dir.clone())),
            (None, true) => Ok(ModelSource::Pretrained),
            _ => bail!("pass --model CHECKPOINT or --pretrained"),
        }
    }
}

/// The model an evaluation runs: a GeAR model ([`GearModelArgs`]), or the untrained start of a
/// training config.
#[derive(clap::Args, Debug, Clone)]
pub struct EvalModelArgs {
    #[command(flatten)]
    pub model: GearModelArgs,
    /// Evaluate the untrained start of this training config (pretrained encoders, new
    /// cross-attention and decoder initialised and seeded as training initialises them) instead
    /// of `--model` / `--pretrained`.
    #[arg(long, conflicts_with_all = ["model", "pretrained"])]
    untrained: Option<PathBuf>,
    /// Generate with this decoding instead of the model's own (`decoder.decoding`): e.g. span
    /// decoding for a model trained with free decoding.
    #[arg(long, value_enum)]
    decoding: Option<DecodingArg>,
    /// Span decoding: pass over spans made only of the question's tokens (`true` or `false`);
    /// default: the model's (`decoder.skip_question_echoes`).
    #[arg(long, value_name = "BOOL")]
    skip_question_echoes: Option<bool>,
}

impl EvalModelArgs {
    /// The device the model runs on.
    pub fn device(&self) -> Device {
        self.model.device.get()
    }

    /// Loads the chosen model.
    pub fn load(&self) -> Result<GearModel> {
        let mut model = match &self.untrained {
            Some(config) => {
                let precision = self.model.precision.checked(self.device())?;
                let mut model = crate::commands::train::untrained_model(config, self.device())?;
                model.set_precision(precision);
                model
            }
            None if self.model.given() => self.model.load()?.0,
            None => bail!("pass --model CHECKPOINT, --pretrained or --untrained CONFIG"),
        };
        if let Some(d) = self.decoding {
            model.set_decoding(d.into())?;
        }
        if let Some(skip) = self.skip_question_echoes {
            model.set_skip_question_echoes(skip)?;
        }
        Ok(model)
    }
}

/// How `gear generate`/`explain`/`eval` decode (`--decoding`).
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodingArg {
    /// Any vocabulary token at every step (models without a copy head only).
    Free,
    /// A span of the document, returned with its place in the document.
    Span,
    /// A span that starts in the sentence GeAR's local retrieval ranks first.
    LocatedSpan,
}

impl From<DecodingArg> for gear_model::Decoding {
    fn from(d: DecodingArg) -> Self {
        match d {
            DecodingArg::Free => gear_model::Decoding::Free,
            DecodingArg::Span => gear_model::Decoding::Span,
            DecodingArg::LocatedSpan => gear_model::Decoding::LocatedSpan,
        }
    }
}

/// How a sentence's token weights become its score (`--aggregation`).
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aggregation {
    /// The attention mass on the sentence's tokens (the paper's).
    Sum,
    /// The mean weight per token (no bias towards long sentences).
    Mean,
}

impl From<Aggregation> for UnitAggregation {
    fn from(a: Aggregation) -> Self {
        match a {
            Aggregation::Sum => UnitAggregation::Sum,
            Aggregation::Mean => UnitAggregation::Mean,
        }
    }
}

/// `--layers`: the fusion layers a local-retrieval sweep evaluates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LayersArg {
    /// Every layer of the model.
    All,
    /// These layers (1-based).
    List(Vec<usize>),
}

impl FromStr for LayersArg {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if s.trim() == "all" {
            return Ok(Self::All);
        }
        s.split(',')
            .map(|x| match x.trim().parse::<usize>() {
                Ok(0) | Err(_) => Err(format!("`{x}` is not a layer number (1-based), nor `all`")),
                Ok(n) => Ok(n),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Self::List)
    }
}

impl LayersArg {
    /// The layers for a model of `layers` layers; one outside it is refused.
    pub fn resolve(&self, layers: usize) -> Result<Vec<usize>> {
        match self {
            Self::All => Ok((1..=layers).collect()),
            Self::List(list) => {
                if let Some(l) = list.iter().find(|&&l| l > layers) {
                    bail!("--layers: layer {l} is outside the model's 1..={layers}");
                }
                Ok(list.clone())
            }
        }
    }
}

/// `--precision`.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrecisionArg {
    /// Float32 throughout.
    Fp32,
    /// bfloat16 autocast for the forward pass (matrix products in bfloat16): on a GPU, or a CPU
    /// with AVX-512 BF16 or AMX-BF16; refused on other CPUs.
    Bf16,
}

/// `--precision` of the inference commands (embedding, indexing, searching, locating,
/// generating, serving).
#[derive(clap::Args, Debug, Clone, Copy)]
pub struct InferencePrecision {
    /// Arithmetic of the model's forward passes (GeAR's or the sentence encoder's; the baselines
    /// `gear eval` compares with run in fp32). `bf16` needs a GPU or a CPU with AVX-512 BF16 or
    /// AMX-BF16 (refused elsewhere, where it would run several times slower).
    #[arg(long = "precision", value_enum, default_value = "fp32")]
    precision: PrecisionArg,
}

impl InferencePrecision {
    /// The precision, refused when the device cannot run it at speed; logged.
    pub fn checked(self, device: Device) -> Result<gear_model::Precision> {
        let p: gear_model::Precision = self.precision.into();
        p.check(device)?;
        tracing::info!("precision: {}", p.describe(device));
        Ok(p)
    }
}

impl From<PrecisionArg> for gear_model::Precision {
    fn from(p: PrecisionArg) -> Self {
        match p {
            PrecisionArg::Fp32 => Self::Fp32,
            PrecisionArg::Bf16 => Self::Bf16,
        }
    }
}

/// `--scenario`.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScenarioArg {
    /// Relevant-information retrieval (local R@3, ROUGE).
    Rir,
    /// Question-answer retrieval (local R@1, EM/F1).
    Qar,
}

impl From<ScenarioArg> for gear_data::Scenario {
    fn from(s: ScenarioArg) -> Self {
        match s {
            ScenarioArg::Rir => Self::Rir,
            ScenarioArg::Qar => Self::Qar,
        }
    }
}

/// `gear index build --vectors`.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum VectorsArg {
    /// float32.
    F32,
    /// float16.
    F16,
}

impl From<VectorsArg> for gear_infer::VectorPrecision {
    fn from(v: VectorsArg) -> Self {
        match v {
            VectorsArg::F32 => Self::F32,
            VectorsArg::F16 => Self::F16,
        }
    }
}

/// `gear index ann --graph-vectors`.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum GraphVectorsArg {
    /// int8 (a quarter of float32).
    I8,
    /// float16.
    F16,
    /// float32.
    F32,
}

impl From<GraphVectorsArg> for gear_infer::GraphVectors {
    fn from(v: GraphVectorsArg) -> Self {
        match v {
            GraphVectorsArg::I8 => Self::I8,
            GraphVectorsArg::F16 => Self::F16,
            GraphVectorsArg::F32 => Self::F32,
        }
    }
}

/// `gear index build --ann`.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnnArg {
    /// An HNSW graph, saved with the index (`gear search --backend hnsw` uses it).
    Hnsw,
}

/// `--backend`.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum SearchBackend {
    /// Exact matrix-product search.
    Exact,
    /// Approximate search over the index's HNSW graph (`gear index ann` builds it).
    Hnsw,
}

/// How `gear search` and `gear serve` search an index.
#[derive(clap::Args, Debug)]
pub struct BackendArgs {
    /// Search backend: exact, or HNSW (approximate, over the graph `gear index ann` saved with
    /// the index; results scored again exactly).
    #[arg(long, value_enum, default_value_t = SearchBackend::Exact)]
    backend: SearchBackend,
    /// HNSW candidate list size while searching: recall vs speed (`--backend hnsw`; default
    /// 64).
    #[arg(long, value_parser = count(1..=65_536))]
    ef_search: Option<usize>,
    /// HNSW candidates per result scored again exactly (`--backend hnsw`; default 4; 1: the
    /// graph's own top-k).
    #[arg(long, value_parser = count(1..=1000))]
    rerank: Option<usize>,
}

impl BackendArgs {
    /// Whether `--rerank` was given.
    pub fn reranks(&self) -> bool {
        self.rerank.is_some()
    }

    /// The backend asked for; HNSW settings without `--backend hnsw` are refused.
    pub fn backend(&self) -> Result<Backend> {
        match self.backend {
            SearchBackend::Exact => {
                if self.ef_search.is_some() || self.rerank.is_some() {
                    bail!("--ef-search and --rerank apply to --backend hnsw only");
                }
                Ok(Backend::Exact)
            }
            SearchBackend::Hnsw => {
                let default = HnswConfig::default();
                Ok(Backend::Hnsw(HnswConfig {
                    ef_search: self.ef_search.unwrap_or(default.ef_search),
                    rerank: self.rerank.unwrap_or(default.rerank),
                }))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_parse_all_or_a_list_of_positive_numbers() {
        assert_eq!("all".parse::<LayersArg>(), Ok(LayersArg::All));
        assert_eq!(
            "2, 5,6".parse::<LayersArg>(),
            Ok(LayersArg::List(vec![2, 5, 6]))
        );
        assert!("0".parse::<LayersArg>().unwrap_err().contains("`0`"));
        assert!("2,x".parse::<LayersArg>().unwrap_err().contains("`x`"));
        assert_eq!(LayersArg::All.resolve(3).unwrap(), [1, 2, 3]);
        let err = LayersArg::List(vec![4]).resolve(3).unwrap_err();
        assert!(err.to_string().contains("outside"), "{err}");
    }

    #[test]
    fn devices_are_parsed_by_clap() {
        assert_eq!(device("cpu"), Ok(Device::Cpu));
        assert!(device("gpu").unwrap_err().contains("gpu"));
        assert!(device("cuda:x").unwrap_err().contains("cuda:N"));
    }
}
