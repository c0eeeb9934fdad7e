//! The rows of `cargo xtask ablate`: each a name, what it changes, and the fields it sets in
//! the base config (or the trained row whose checkpoint it decodes differently).

/// One variant: a name, what it changes, and the changed fields (`section.field`, TOML value).
pub(super) struct Row {
    pub(super) name: &'static str,
    pub(super) what: &'static str,
    pub(super) set: &'static [(&'static str, &'static str)],
    /// Not trained: another row's checkpoint evaluated with these `gear eval squad` options
    /// (e.g. `--decoding span`).
    pub(super) decodes: Option<(&'static str, &'static [&'static str])>,
    /// Hard negatives mined per training triple (`gear data negatives`, BM25 over the training
    /// passages); 0: the triples as they are.
    pub(super) negatives: u32,
}

const PAPER_DECODER: [(&str, &str); 7] = [
    ("model.decoder_memory", "\"fusion\""),
    ("model.decoder_copy", "\"none\""),
    ("model.decoding", "\"free\""),
    ("model.skip_question_echoes", REMOVE),
    ("model.reader_layers", "0"),
    ("model.reader_input", REMOVE),
    ("optim.reader_lr_scale", REMOVE),
];

/// A row value that removes the field from the base config (its default applies).
pub(super) const REMOVE: &str = "-";

/// Every row; the first group (up to `alpha-0`) is the default selection.
pub(super) const ROWS: &[Row] = &[
    Row {
        name: "paper",
        what: "decoder over the fusion states only, vocabulary only, free decoding (the paper)",
        set: &PAPER_DECODER,
        decodes: None,
        negatives: 0,
    },
    Row {
        name: "paper-span",
        what: "the paper's decoder (row `paper`'s checkpoint), decoding constrained to spans of the passage",
        set: &[],
        decodes: Some(("paper", &["--decoding", "span"])),
        negatives: 0,
    },
    Row {
        name: "memory",
        what: "decoder memory = fusion states + passage token states, vocabulary only, spans",
        set: &[
            ("model.decoder_memory", "\"fusion_and_document\""),
            ("model.decoder_copy", "\"none\""),
            ("model.decoding", "\"span\""),
            ("model.reader_layers", "0"),
            ("model.reader_input", REMOVE),
            ("optim.reader_lr_scale", REMOVE),
        ],
        decodes: None,
        negatives: 0,
    },
    Row {
        name: "pointer",
        what: "memory + a pointer over passage tokens mixed by a learned gate, spans",
        set: &[
            ("model.decoder_memory", "\"fusion_and_document\""),
            ("model.decoder_copy", "\"pointer\""),
            ("model.decoding", "\"span\""),
            ("model.reader_layers", "0"),
            ("model.reader_input", REMOVE),
            ("optim.reader_lr_scale", REMOVE),
        ],
        decodes: None,
        negatives: 0,
    },
    Row {
        name: "local-attention",
        what: "memory + pointer whose prior is the fusion encoder's local-layer cross-attention, spans",
        set: &[
            ("model.decoder_memory", "\"fusion_and_document\""),
            ("model.decoder_copy", "\"local_attention\""),
            ("model.decoding", "\"span\""),
            ("model.reader_layers", "0"),
            ("model.reader_input", REMOVE),
            ("optim.reader_lr_scale", REMOVE),
        ],
        decodes: None,
        negatives: 0,
    },
    Row {
        name: "local-attention-fusion-memory",
        what: "pointer with the local-attention prior, decoder memory = fusion states only, spans",
        set: &[
            ("model.decoder_memory", "\"fusion\""),
            ("model.decoder_copy", "\"local_attention\""),
            ("model.decoding", "\"span\""),
            ("model.reader_layers", "0"),
            ("model.reader_input", REMOVE),
            ("optim.reader_lr_scale", REMOVE),
        ],
        decodes: None,
        negatives: 0,
    },
    Row {
        name: "decoder-4",
        what: "the config's decoder with 4 layers instead of its own",
        set: &[("model.decoder_layers", "4")],
        decodes: None,
        negatives: 0,
    },
    Row {
        name: "reader-1",
        what: "one reader layer: passage tokens read the question (self-attention over question and passage) before the decoder and the copy head",
        set: &[
            ("model.reader_layers", "1"),
            ("model.reader_input", REMOVE),
            ("optim.reader_lr_scale", REMOVE),
            ("model.decoding", "\"span\""),
        ],
        decodes: None,
        negatives: 0,
    },
    Row {
        name: "reader-2",
        what: "two reader layers (the document encoder's last two, now over question and passage)",
        set: &[
            ("model.reader_layers", "2"),
            ("model.reader_input", REMOVE),
            ("optim.reader_lr_scale", REMOVE),
            ("model.decoding", "\"span\""),
        ],
        decodes: None,
        negatives: 0,
    },
    Row {
        name: "reader-2-lr-1",
        what: "two reader layers trained at the encoder's learning rate (1x, not the decoder's 20x)",
        set: &[
            ("model.reader_layers", "2"),
            ("model.reader_input", REMOVE),
            ("optim.reader_lr_scale", "1.0"),
            ("model.decoding", "\"span\""),
        ],
        decodes: None,
        negatives: 0,
    },
    Row {
        name: "reader-2-below",
        what: "two reader layers that continue the encoder DeFormer-style: they read question and passage states after layer L − 2 (not the encoders' outputs), at the encoder's learning rate; located spans",
        set: &[
            ("model.reader_layers", "2"),
            ("model.reader_input", "\"below\""),
            ("optim.reader_lr_scale", "1.0"),
        ],
        decodes: None,
        negatives: 0,
    },
    Row {
        name: "reader-4-below",
        what: "four reader layers from layer 2's states (the encoder's last four over question and passage), encoder rate, located spans",
        set: &[
            ("model.reader_layers", "4"),
            ("model.reader_input", "\"below\""),
            ("optim.reader_lr_scale", "1.0"),
        ],
        decodes: None,
        negatives: 0,
    },
    Row {
        name: "reader-5-below",
        what: "five reader layers from layer 1's states (the encoder's last five over question and passage), encoder rate, located spans",
        set: &[
            ("model.reader_layers", "5"),
            ("model.reader_input", "\"below\""),
            ("optim.reader_lr_scale", "1.0"),
        ],
        decodes: None,
        negatives: 0,
    },
    Row {
        name: "reader-4-below-echoes-kept",
        what: "the `reader-4-below` row's checkpoint, spans made only of the question's tokens not passed over",
        set: &[],
        decodes: Some(("reader-4-below", &["--skip-question-echoes", "false"])),
        negatives: 0,
    },
    Row {
        name: "copy-answer-span",
        what: "L_LM copies the answer's k-th token from the k-th token of the answer's own occurrence in the passage (not from any position holding it); located spans",
        set: &[("loss.copy_from", "\"answer_span\"")],
        decodes: None,
        negatives: 0,
    },
    Row {
        name: "reader-2-below-answer-span",
        what: "`reader-2-below` and `copy-answer-span` together",
        set: &[
            ("model.reader_layers", "2"),
            ("model.reader_input", "\"below\""),
            ("optim.reader_lr_scale", "1.0"),
            ("loss.copy_from", "\"answer_span\""),
        ],
        decodes: None,
        negatives: 0,
    },
    Row {
        name: "local-attention-span",
        what: "the `local-attention` row's checkpoint, spans starting anywhere in the passage",
        set: &[],
        decodes: Some(("local-attention", &["--decoding", "span"])),
        negatives: 0,
    },
    Row {
        name: "local-attention-located",
        what: "the `local-attention` row's checkpoint, spans starting in the sentence GeAR locates first",
        set: &[],
        decodes: Some(("local-attention", &["--decoding", "located-span"])),
        negatives: 0,
    },
    Row {
        name: "copy-in-sentence",
        what: "L_LM copies a target token from the answer's sentence when it holds it (not from any position holding it)",
        set: &[
            ("loss.copy_from", "\"answer_sentence\""),
            ("model.decoding", "\"span\""),
            ("model.reader_layers", "0"),
            ("model.reader_input", REMOVE),
            ("optim.reader_lr_scale", REMOVE),
        ],
        decodes: None,
        negatives: 0,
    },
    Row {
        name: "copy-in-sentence-located",
        what: "the `copy-in-sentence` row's checkpoint, spans starting in the sentence GeAR locates first",
        set: &[],
        decodes: Some(("copy-in-sentence", &["--decoding", "located-span"])),
        negatives: 0,
    },
    Row {
        name: "reader-copy-in-sentence",
        what: "`reader-2-lr-1` and `copy-in-sentence` together",
        set: &[
            ("model.reader_layers", "2"),
            ("model.reader_input", REMOVE),
            ("optim.reader_lr_scale", "1.0"),
            ("loss.copy_from", "\"answer_sentence\""),
            ("model.decoding", "\"span\""),
        ],
        decodes: None,
        negatives: 0,
    },
    Row {
        name: "reader-copy-in-sentence-located",
        what: "the `reader-copy-in-sentence` row's checkpoint, spans starting in the sentence GeAR locates first",
        set: &[],
        decodes: Some(("reader-copy-in-sentence", &["--decoding", "located-span"])),
        negatives: 0,
    },
    Row {
        name: "fusion-lr-5",
        what: "the fusion cross-attention at 5× the encoder's learning rate (the config: its own)",
        set: &[("optim.cross_attention_lr_scale", "5.0")],
        decodes: None,
        negatives: 0,
    },
    Row {
        name: "alpha-0",
        what: "α = 0: no generation loss (L_CL + L_LOC)",
        set: &[("loss.alpha", "0.0")],
        decodes: None,
        negatives: 0,
    },
    Row {
        name: "alpha-0.25",
        what: "α = 0.25 (the paper's)",
        set: &[("loss.alpha", "0.25")],
        decodes: None,
        negatives: 0,
    },
    Row {
        name: "alpha-0.5",
        what: "α = 0.5",
        set: &[("loss.alpha", "0.5")],
        decodes: None,
        negatives: 0,
    },
    Row {
        name: "alpha-1",
        what: "α = 1",
        set: &[("loss.alpha", "1.0")],
        decodes: None,
        negatives: 0,
    },
    Row {
        name: "no-loc-alpha-0",
        what: "α = 0 and no L_LOC: the contrastive loss alone",
        set: &[("loss.alpha", "0.0"), ("loss.local_weight", "0.0")],
        decodes: None,
        negatives: 0,
    },
    Row {
        name: "no-loc-alpha-0.25",
        what: "α = 0.25, no L_LOC: generation is the only teacher of where to look",
        set: &[("loss.alpha", "0.25"), ("loss.local_weight", "0.0")],
        decodes: None,
        negatives: 0,
    },
    Row {
        name: "no-loc-alpha-0.5",
        what: "α = 0.5, no L_LOC",
        set: &[("loss.alpha", "0.5"), ("loss.local_weight", "0.0")],
        decodes: None,
        negatives: 0,
    },
    Row {
        name: "no-loc-alpha-1",
        what: "α = 1, no L_LOC",
        set: &[("loss.alpha", "1.0"), ("loss.local_weight", "0.0")],
        decodes: None,
        negatives: 0,
    },
    Row {
        name: "hard-negatives",
        what: "one BM25-mined hard negative per question (another passage of the training articles) in L_CL",
        set: &[("loss.hard_negatives", "1")],
        decodes: None,
        negatives: 1,
    },
    Row {
        name: "unfrozen-documents",
        what: "the document encoder trained too (slower steps; the index must be rebuilt)",
        set: &[("optim.freeze_document_encoder", "false")],
        decodes: None,
        negatives: 0,
    },
];

/// The default selection: the decoder rows.
pub(super) const DEFAULT_ROWS: [&str; 5] = [
    "paper",
    "paper-span",
    "memory",
    "pointer",
    "local-attention",
];
