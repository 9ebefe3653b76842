//! How a cluster is reached, decided once when it is loaded: pushed to over
//! SSH and each node's agent ([`Remote`], `crate::remote`), or pulled from
//! the store by its nodes ([`PullCluster`], `crate::fleet::pull`). A
//! command loads the mode, plans, and hands the plan to the deliverer of
//! that mode; it never loads the cluster again nor climbs into another
//! command. Loading errors (an unknown name, a malformed definition) are
//! the command's errors, never taken for "not a pull cluster".

use anyhow::Result;

use crate::cli::RemoteOpts;
use crate::clusters;
use crate::fleet::pull::PullCluster;
use crate::plan::Form;
use crate::remote::Remote;
use crate::Context;

/// A cluster loaded for one command, in the one mode it is reached by.
#[derive(Debug)]
pub(crate) enum Mode {
    /// Pushed to: the nodes to reach, with the checked fan-out flags.
    Push(Remote),
    /// Its nodes pull from the store (added with `--pull`).
    Pull(PullCluster),
}

impl Mode {
    /// Load cluster `name` once. A pull cluster takes no fan-out flags; a
    /// push cluster's are checked ([`crate::remote::check_remote`]) before
    /// its loading error, if any, is reported, as [`Remote::resolve`] does.
    pub(crate) fn load(ctx: &Context, name: &str, remote: &RemoteOpts, json: bool) -> Result<Self> {
        match clusters::load(&ctx.home, name) {
            Ok(cluster) if cluster.pull => Ok(Self::Pull(PullCluster::new(cluster))),
            loaded => {
                crate::remote::check_remote(remote)?;
                Remote::of(ctx, loaded, remote, json).map(Self::Push)
            }
        }
    }

    /// The form of the items this mode delivers: placed here for a push,
    /// asked for a pull (each node places them under its own policy).
    pub(crate) fn form(&self) -> Form {
        match self {
            Self::Push(_) => Form::Placed,
            Self::Pull(_) => Form::Asked,
        }
    }

    /// Whether the cluster is this machine (`local`, always pushed to).
    pub(crate) fn is_local(&self) -> bool {
        matches!(self, Self::Push(r) if r.cluster.is_local())
    }
}
