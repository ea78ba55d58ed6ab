//! Shootout adapter for the demo replicated counter ([`common::demo`]): the smallest complete
//! adapter, and the template for the others.
//!
//! An operation is one `Add(1)` sent to node `client % nodes` (clients are spread evenly over
//! the nodes, since every node can originate updates); it completes when a majority holds the
//! update.

use std::sync::Arc;

use async_trait::async_trait;
use common::demo::{DemoConfig, DemoNode, DemoRequest, DemoResponse};
use common::driver::DriverStats;

use crate::{BenchError, Cluster, ClusterSpec, Contender, Nodes};

/// The demo protocol as a shootout contender.
#[derive(Clone, Copy, Debug, Default)]
pub struct Demo;

/// A running demo cluster.
pub struct DemoCluster {
    nodes: Nodes<DemoNode>,
}

#[async_trait]
impl Contender for Demo {
    fn name(&self) -> &'static str {
        "demo"
    }

    fn theory(&self, nodes: usize) -> crate::Theory {
        crate::Theory::replicated_log(nodes)
    }

    async fn start(&self, spec: &ClusterSpec) -> Result<Arc<dyn Cluster>, BenchError> {
        let nodes = Nodes::start(spec, |id, members| DemoConfig::new(id, members.to_vec())).await?;
        // Every node serves at once: there is no leader to wait for.
        Ok(Arc::new(DemoCluster { nodes }))
    }
}

#[async_trait]
impl Cluster for DemoCluster {
    async fn run_op(&self, client: usize, _seq: u64) -> Result<(), BenchError> {
        let node = &self.nodes.handles[client % self.nodes.handles.len()];
        match node.request(DemoRequest::Add(1)).await? {
            DemoResponse::Total(_) => Ok(()),
            DemoResponse::Failed(e) => Err(BenchError::Op(e.to_string())),
        }
    }

    fn stats(&self) -> DriverStats {
        self.nodes.stats()
    }

    async fn shutdown(&self) -> Result<(), BenchError> {
        self.nodes.shutdown().await
    }
}
