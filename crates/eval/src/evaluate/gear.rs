//! GeAR's local retrieval in an evaluation: the gold documents grouped by length so that each
//! fusion forward holds about `batch` queries over several documents (each document's token
//! states computed once, [`GearModel::locate`]), at the model's own layer and at every
//! layer of a sweep.

use std::collections::BTreeMap;

use gear_model::{GearModel, LocateOptions, LocateQueries};

use super::{EvalOptions, LocalMetrics, Prepared};
use crate::Result;

/// GeAR's local metrics: at its own layer (with the seconds they took; `None` when GeAR is not
/// evaluated) and per swept layer.
pub(super) struct GearLocal {
    pub own: Option<(BTreeMap<String, f64>, f64)>,
    pub sweep: BTreeMap<usize, BTreeMap<String, f64>>,
}

/// The gold documents in groups of about `batch` queries, shortest documents first.
fn groups(prep: &Prepared<'_>) -> Vec<Vec<usize>> {
    let mut by_length: Vec<usize> = prep.by_passage.keys().copied().collect();
    by_length.sort_by_key(|&p| (prep.passages[p].len(), p));
    let mut groups: Vec<Vec<usize>> = Vec::new();
    let mut in_group = 0usize;
    for p in by_length {
        let n = prep.by_passage[&p].len();
        match groups.last_mut() {
            Some(g) if in_group + n <= prep.batch => {
                g.push(p);
                in_group += n;
            }
            _ => {
                groups.push(vec![p]);
                in_group = n;
            }
        }
    }
    groups
}

/// Every query's ranking of its gold document's sentences at `locate`'s layer, into `local`.
fn rank_layer(
    model: &GearModel,
    prep: &Prepared<'_>,
    groups: &[Vec<usize>],
    locate: &LocateOptions,
    local: &mut LocalMetrics,
) -> Result<()> {
    for group in groups {
        let mut request = LocateQueries::default();
        let mut asked = Vec::new();
        for p in group {
            let row = request.document(prep.passages[*p], prep.spans[p].as_slice());
            for &i in &prep.by_passage[p] {
                request.query(prep.questions[i], row);
                asked.push(i);
            }
        }
        let rankings = model.locate(&request, locate)?;
        for (r, &i) in rankings.iter().zip(&asked) {
            let ranked: Vec<usize> = r.units.iter().map(|u| u.index).collect();
            local.add(&ranked, &prep.targets[i].relevant);
        }
    }
    Ok(())
}

/// GeAR's cross-attention local retrieval at its own layer and each layer `options` sweeps.
pub(super) fn gear_local(
    model: &GearModel,
    prep: &Prepared<'_>,
    options: &EvalOptions,
) -> Result<GearLocal> {
    let own_layer = options
        .layer
        .unwrap_or_else(|| model.config().local_layer());
    let mut layers: Vec<usize> = Vec::new();
    if options.gear {
        layers.push(own_layer);
        layers.extend(options.layers.iter().filter(|&&l| l != own_layer));
    }
    let groups = groups(prep);
    let mut result = GearLocal {
        own: None,
        sweep: BTreeMap::new(),
    };
    for &layer in &layers {
        let started = std::time::Instant::now();
        let mut local = LocalMetrics::new();
        let locate = LocateOptions {
            layer: Some(layer),
            aggregation: options.aggregation,
            ..LocateOptions::default()
        };
        rank_layer(model, prep, &groups, &locate, &mut local)?;
        let mut m = BTreeMap::new();
        local.write(&mut m);
        if layer == own_layer {
            result.own = Some((m.clone(), started.elapsed().as_secs_f64()));
        }
        if options.layers.contains(&layer) {
            result.sweep.insert(layer, m);
        }
    }
    Ok(result)
}
