use std::collections::HashMap;
use std::net::IpAddr;

use crate::Workload;

/// The workloads policy talks about, indexed by address. Built only through
/// [`Inventory::new`], which guarantees that no address belongs to two workloads.
#[derive(Debug, Clone, Default)]
pub struct Inventory {
    workloads: Vec<Workload>,
    by_address: HashMap<IpAddr, usize>,
    by_name: HashMap<String, usize>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InventoryError {
    #[error("address {address} belongs to both {first:?} and {second:?}")]
    DuplicateAddress {
        address: IpAddr,
        first: String,
        second: String,
    },
    #[error("workload name {0:?} is used twice")]
    DuplicateName(String),
}

impl Inventory {
    pub fn new(workloads: Vec<Workload>) -> Result<Self, InventoryError> {
        let mut by_address = HashMap::new();
        let mut by_name = HashMap::new();
        for (i, w) in workloads.iter().enumerate() {
            if by_name.insert(w.name.clone(), i).is_some() {
                return Err(InventoryError::DuplicateName(w.name.clone()));
            }
            for a in &w.addresses {
                if let Some(j) = by_address.insert(*a, i) {
                    let first: &Workload = &workloads[j];
                    return Err(InventoryError::DuplicateAddress {
                        address: *a,
                        first: first.name.clone(),
                        second: w.name.clone(),
                    });
                }
            }
        }
        Ok(Self {
            workloads,
            by_address,
            by_name,
        })
    }

    pub fn workloads(&self) -> &[Workload] {
        &self.workloads
    }

    pub fn by_address(&self, addr: IpAddr) -> Option<&Workload> {
        self.by_address.get(&addr).map(|&i| &self.workloads[i])
    }

    pub fn by_name(&self, name: &str) -> Option<&Workload> {
        self.by_name.get(name).map(|&i| &self.workloads[i])
    }

    pub fn len(&self) -> usize {
        self.workloads.len()
    }

    pub fn is_empty(&self) -> bool {
        self.workloads.is_empty()
    }
}
