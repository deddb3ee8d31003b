//! Gauges of the in-flight counts, refreshed from shared data on the root context's tick (not
//! per request), so operators and tests can watch them: `eisodos.<plugin>.in_flight.<cluster>`
//! (`wasmcustom.` in front in Envoy's `/stats`).

use log::warn;

use crate::host::Host;

/// One gauge per backend, in configuration order.
pub struct InFlightGauges {
    ids: Vec<Option<u32>>,
}

impl InFlightGauges {
    /// Defines (or finds again, after a reconfiguration) the gauges of `clusters`.
    pub fn define<'a>(
        host: &impl Host,
        namespace: &str,
        clusters: impl Iterator<Item = &'a str>,
    ) -> Self {
        let ids = clusters
            .map(|cluster| {
                let name = format!("eisodos.{namespace}.in_flight.{cluster}");
                host.define_gauge(&name)
                    .map_err(|status| warn!("cannot define gauge {name}: {}", status.name()))
                    .ok()
            })
            .collect();
        Self { ids }
    }

    /// Sets every gauge to its backend's count.
    pub fn record(&self, host: &impl Host, counts: &[u32]) {
        for (id, &count) in self.ids.iter().zip(counts) {
            if let Some(id) = id {
                let _ = host.record_metric(*id, u64::from(count));
            }
        }
    }
}
