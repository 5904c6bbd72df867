//! Pairing profiles, agents, rollouts and label rules in the control store, on SQLite
//! and on PostgreSQL.

mod common;

use bulkhead_model::{EnforcementMode, Labels};
use bulkhead_store::StoreError;
use bulkhead_store::control::{
    AuditContext, ControlStore, EnrollRefusal, NewAgent, NewPairingProfile,
};
use common::backends::TestDb;

mod sqlite {
    use super::*;

    fn open() -> ControlStore {
        ControlStore::in_memory().unwrap()
    }

    fn fresh() -> TestDb {
        TestDb::sqlite()
    }

    include!("suite/agents.rs");
    include!("suite/lifecycle.rs");
}

mod postgres {
    use super::*;

    fn open() -> ControlStore {
        fresh().open()
    }

    fn fresh() -> TestDb {
        TestDb::postgres()
    }

    include!("suite/agents.rs");
    include!("suite/lifecycle.rs");
}

fn ctx(action: &str, at_ms: i64) -> AuditContext {
    AuditContext {
        actor: "alice".into(),
        source: "127.0.0.1".into(),
        at_ms,
        action: action.into(),
    }
}

fn profile(name: &str, max_uses: Option<u32>, expires_at_ms: Option<i64>) -> NewPairingProfile {
    NewPairingProfile {
        name: name.into(),
        labels: Labels::parse_list("app=shop,env=prod").unwrap(),
        mode: EnforcementMode::Monitor,
        max_uses,
        expires_at_ms,
        workload: None,
        scope: None,
    }
}

fn agent(workload: &str, credential: u8) -> NewAgent {
    NewAgent {
        workload: workload.into(),
        credential_hash: [credential; 32],
        host_json: format!(r#"{{"hostname":"{workload}"}}"#),
        pending: None,
        changes: Vec::new(),
    }
}

const KEY: [u8; 32] = [7; 32];
