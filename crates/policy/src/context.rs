//! What the hosts' tables add to the policy's decision (docs/policy.md, "What the hosts
//! add"): failsafe ports, the control plane, quarantine. The renderer puts the same
//! three into every table; the engine needs them to say what the kernel does.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};

use bulkhead_model::{
    AtHosts, Decision, End, Exemption, HostEnd, Inventory, Quarantine, ServicePort, Workload,
};

const TCP: u8 = 6;

/// The empty context is policy alone: no failsafe port, no control plane, and a
/// quarantine counts as requested only. The server passes its own.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostContext {
    /// Inbound ports every managed host accepts whatever policy says.
    pub failsafe_ports: Vec<ServicePort>,
    /// Ports every managed host may reach outbound whatever policy says (DNS, NTP,
    /// a management network: Calico's outbound failsafe list is the model).
    pub failsafe_outbound: Vec<ServicePort>,
    /// The control plane's TCP endpoints, which every managed host may reach.
    pub control_plane: Vec<SocketAddr>,
    /// Quarantined workloads whose agent has reported the quarantine applied.
    pub quarantine_applied: BTreeSet<String>,
}

impl HostContext {
    /// Inbound to a failsafe port: the destination's table passes it.
    pub fn failsafe(&self, proto: u8, port: u16) -> bool {
        self.failsafe_ports.iter().any(|sp| sp.matches(proto, port))
    }

    /// Outbound to a failsafe port: the source's table passes it.
    pub fn failsafe_out(&self, proto: u8, port: u16) -> bool {
        self.failsafe_outbound
            .iter()
            .any(|sp| sp.matches(proto, port))
    }

    /// Why a managed source's table passes this connection whatever policy says.
    pub fn source_exemption(&self, dst: IpAddr, proto: u8, port: u16) -> Option<Exemption> {
        if self.control_plane(dst, proto, port) {
            Some(Exemption::ControlPlane)
        } else if self.failsafe_out(proto, port) {
            Some(Exemption::FailsafeOutbound)
        } else {
            None
        }
    }

    /// Why a managed destination's table passes this connection whatever policy says.
    pub fn destination_exemption(&self, proto: u8, port: u16) -> Option<Exemption> {
        self.failsafe(proto, port).then_some(Exemption::Failsafe)
    }

    /// Outbound to the control plane: the source's table passes it.
    pub fn control_plane(&self, dst: IpAddr, proto: u8, port: u16) -> bool {
        proto == TCP
            && self
                .control_plane
                .iter()
                .any(|ep| ep.ip() == dst && ep.port() == port)
    }

    pub fn quarantine_of(&self, w: &Workload) -> Quarantine {
        if !w.quarantined() {
            Quarantine::None
        } else if self.quarantine_applied.contains(&w.name) {
            Quarantine::Applied
        } else {
            Quarantine::Requested
        }
    }

    /// One end as its table treats this connection; `None` (not in the inventory) is
    /// an unmanaged address.
    pub fn end(&self, w: Option<&Workload>, exempt: Option<Exemption>) -> HostEnd {
        match w.filter(|w| w.managed) {
            None => HostEnd::default(),
            Some(w) => HostEnd {
                enforces: w.enforces(),
                quarantine: self.quarantine_of(w),
                exempt,
            },
        }
    }

    /// The policy decision taken through both ends' tables, with what exempted it
    /// and the quarantined workload that decided, if any.
    pub fn at_hosts(
        &self,
        inv: &Inventory,
        decision: Decision,
        src: IpAddr,
        dst: IpAddr,
        proto: u8,
        port: u16,
    ) -> (AtHosts, Option<Exemption>, Option<String>) {
        let (sw, dw) = (inv.by_address(src), inv.by_address(dst));
        let (at, exempt) = through_tables(
            decision,
            self.end(sw, self.source_exemption(dst, proto, port)),
            self.end(dw, self.destination_exemption(proto, port)),
        );
        let quarantined = at.quarantined.and_then(|e| match e {
            End::Src => sw,
            End::Dst => dw,
        });
        (at, exempt, quarantined.map(|w| w.name.clone()))
    }
}

/// [`AtHosts::of`], and the exemption worth naming: only where it changes something,
/// a denied connection or a quarantined end it keeps open. The oracle and the compiled
/// evaluator both end here.
pub fn through_tables(
    decision: Decision,
    src: HostEnd,
    dst: HostEnd,
) -> (AtHosts, Option<Exemption>) {
    let at = AtHosts::of(decision, src, dst);
    let matters = |e: HostEnd| decision == Decision::Deny || e.quarantine != Quarantine::None;
    let exempt = match (dst.exempt, src.exempt) {
        (Some(why), _) if matters(dst) => Some(why),
        (_, Some(why)) if matters(src) => Some(why),
        _ => None,
    };
    (at, exempt)
}
