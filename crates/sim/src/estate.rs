use std::collections::BTreeMap;
use std::fmt::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use bulkhead_model::{EnforcementMode, WorkloadKind};

use crate::config::{AttackerOrigin, ConfigError, Env, SimConfig};
use crate::rng::Rng;
use crate::traffic::{self, Conversation};

/// What a workload does; also its `role` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    Web,
    App,
    Db,
    /// The idle workloads: batch servers someone forgot.
    Batch,
    Dns,
    Ntp,
    Directory,
    Backup,
    Monitoring,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Web => "web",
            Role::App => "app",
            Role::Db => "db",
            Role::Batch => "batch",
            Role::Dns => "dns",
            Role::Ntp => "ntp",
            Role::Directory => "directory",
            Role::Backup => "backup",
            Role::Monitoring => "monitoring",
        }
    }

    /// Which /24 of an application's /22 the role lives in.
    fn block(self) -> usize {
        match self {
            Role::Web => 0,
            Role::App => 1,
            Role::Db => 2,
            _ => 3,
        }
    }
}

/// One inventory workload, with what the generator knows about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimWorkload {
    pub name: String,
    pub kind: WorkloadKind,
    pub managed: bool,
    pub addresses: Vec<IpAddr>,
    pub hostname: String,
    pub os: &'static str,
    pub os_version: &'static str,
    pub labels: BTreeMap<String, String>,
    pub mode: EnforcementMode,
    pub owner: String,
    pub role: Role,
    /// Index into [`Estate::app_names`]; `None` for shared services.
    pub app: Option<usize>,
    /// `None` for shared services.
    pub env: Option<Env>,
    /// In the inventory but never in traffic.
    pub idle: bool,
}

impl SimWorkload {
    /// The first address, always IPv4.
    pub fn ipv4(&self) -> IpAddr {
        self.addresses[0]
    }

    pub(crate) fn ephemeral_ports(&self) -> (u16, u16) {
        ephemeral_ports(self.os)
    }
}

/// Windows uses the IANA dynamic range; Linux its own default.
pub(crate) fn ephemeral_ports(os: &str) -> (u16, u16) {
    if os == "windows" {
        (49152, 65535)
    } else {
        (32768, 60999)
    }
}

/// The attack the estate contains, for demos that want to point at it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attacker {
    pub origin: AttackerOrigin,
    pub addr: IpAddr,
    /// The prod /24 that is port-scanned.
    pub scanned_subnet: (Ipv4Addr, u8),
    /// Prod hosts reached afterwards over ssh, smb and postgres.
    pub targets: Vec<IpAddr>,
    pub(crate) ephemeral: (u16, u16),
}

/// A generated estate: inventory, policy and the conversations that drive traffic.
#[derive(Debug, Clone)]
pub struct Estate {
    pub(crate) config: SimConfig,
    envs: Vec<Env>,
    apps: Vec<String>,
    workloads: Vec<SimWorkload>,
    unknown: Vec<IpAddr>,
    attacker: Option<Attacker>,
    pub(crate) conversations: Vec<Conversation>,
    /// Prefix sums of conversation weights, for weighted picks by binary search.
    pub(crate) cumulative: Vec<u64>,
}

const APP_NAMES: &[&str] = &[
    "shop", "payments", "hr", "crm", "erp", "billing", "search", "wiki", "mail", "ci",
];

/// Per application: (os, prod version, dev version). Databases are always RHEL.
const APP_OS: &[(&str, &str, &str)] = &[
    ("ubuntu", "22.04", "24.04"),
    ("rhel", "9.4", "9.4"),
    ("windows", "2022", "2022"),
];

/// The laptop of [`AttackerOrigin::UnknownLaptop`]; outside the unknown devices' range.
pub const LAPTOP: Ipv4Addr = Ipv4Addr::new(10, 98, 0, 66);

/// Addresses of `role`'s host `n` of application `app` in `env`: a /22 per
/// application and environment, one /24 per role, hosts from .10.
pub(crate) fn app_v4(env: Env, app: usize, role: Role, n: usize) -> Ipv4Addr {
    let block = app * 4 + role.block();
    Ipv4Addr::new(
        10,
        env.octet() + (block / 256) as u8,
        (block % 256) as u8,
        10 + n as u8,
    )
}

fn app_v6(env: Env, app: usize, role: Role, n: usize) -> Ipv6Addr {
    let block = (app * 4 + role.block()) as u16;
    Ipv6Addr::new(
        0xfd00,
        u16::from(env.octet()),
        0,
        block,
        0,
        0,
        0,
        10 + n as u16,
    )
}

pub(crate) fn unknown_v4(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 99, (i / 250) as u8, 10 + (i % 250) as u8)
}

impl Estate {
    /// Generates the estate.
    ///
    /// # Panics
    /// When the configuration is invalid; see [`Estate::try_generate`].
    pub fn generate(config: &SimConfig) -> Estate {
        Self::try_generate(config).unwrap_or_else(|e| panic!("{e}"))
    }

    pub fn try_generate(config: &SimConfig) -> Result<Estate, ConfigError> {
        config.validate()?;
        let mut envs = config.envs.clone();
        envs.sort();
        envs.dedup();
        if config.attacker {
            let prod_hosts = config.web + config.app + config.db;
            if config.apps == 0 || !envs.contains(&Env::Prod) || prod_hosts == 0 {
                return Err(ConfigError(
                    "the attacker needs at least one application with hosts in prod".into(),
                ));
            }
            if config.attacker_origin == AttackerOrigin::DevWeb
                && (!envs.contains(&Env::Dev) || config.web == 0)
            {
                return Err(ConfigError(
                    "attacker_origin DevWeb needs a dev environment with web servers".into(),
                ));
            }
        }
        let apps: Vec<String> = (0..config.apps)
            .map(|i| match APP_NAMES.get(i) {
                Some(n) => (*n).to_string(),
                None => format!("app{i:03}"),
            })
            .collect();
        let mut workloads = shared_workloads(config);
        for (ai, app) in apps.iter().enumerate() {
            for &env in &envs {
                for (role, count) in [
                    (Role::Web, config.web),
                    (Role::App, config.app),
                    (Role::Db, config.db),
                ] {
                    for n in 0..count {
                        workloads.push(app_workload(config, ai, app, env, role, n, false));
                    }
                }
            }
        }
        let slots = config.apps * envs.len();
        for i in 0..config.idle_workloads {
            let ai = i % config.apps;
            let env = envs[(i / config.apps) % envs.len()];
            let n = i / slots;
            workloads.push(app_workload(
                config,
                ai,
                &apps[ai],
                env,
                Role::Batch,
                n,
                true,
            ));
        }
        let unknown: Vec<IpAddr> = (0..config.unknown_devices)
            .map(|i| IpAddr::V4(unknown_v4(i)))
            .collect();
        let attacker = config.attacker.then(|| make_attacker(config, &workloads));
        let mut estate = Estate {
            config: config.clone(),
            envs,
            apps,
            workloads,
            unknown,
            attacker,
            conversations: Vec::new(),
            cumulative: Vec::new(),
        };
        let mut rng = Rng::fork(config.seed, 1);
        estate.conversations = traffic::conversations(&estate, &mut rng);
        let mut sum = 0u64;
        estate.cumulative = estate
            .conversations
            .iter()
            .map(|c| {
                sum += u64::from(c.weight);
                sum
            })
            .collect();
        Ok(estate)
    }

    pub fn config(&self) -> &SimConfig {
        &self.config
    }

    pub fn envs(&self) -> &[Env] {
        &self.envs
    }

    pub fn app_names(&self) -> &[String] {
        &self.apps
    }

    /// Every inventory workload: shared services, applications, then idle ones.
    pub fn workloads(&self) -> &[SimWorkload] {
        &self.workloads
    }

    /// Addresses that appear in traffic but not in the inventory (the attacker's
    /// laptop is not among them; see [`Estate::attacker`]).
    pub fn unknown_devices(&self) -> &[IpAddr] {
        &self.unknown
    }

    pub fn attacker(&self) -> Option<&Attacker> {
        self.attacker.as_ref()
    }

    pub fn workload_by_name(&self, name: &str) -> Option<&SimWorkload> {
        self.workloads.iter().find(|w| w.name == name)
    }

    /// Number of distinct (source, destination, protocol, port) patterns that make up
    /// normal and unknown traffic. Each appears at least once in [`Estate::flows`].
    pub fn conversation_count(&self) -> usize {
        self.conversations.len()
    }

    /// The inventory, in the CSV format of `examples/estate/inventory.csv` (file name
    /// suggestion: `inventory.csv`).
    pub fn inventory_csv(&self) -> String {
        let mut out = String::with_capacity(128 * (self.workloads.len() + 1));
        out.push_str("name,kind,managed,addresses,hostname,os,os_version,labels,mode,owner\n");
        for w in &self.workloads {
            let addrs: Vec<String> = w.addresses.iter().map(ToString::to_string).collect();
            let labels: Vec<String> = w.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let _ = writeln!(
                out,
                "{},{},{},{},{},{},{},{},{},{}",
                w.name,
                w.kind,
                w.managed,
                addrs.join(" "),
                w.hostname,
                w.os,
                w.os_version,
                labels.join(";"),
                if w.managed {
                    w.mode.to_string()
                } else {
                    String::new()
                },
                w.owner
            );
        }
        out
    }

    /// Policy-as-code files (name, YAML) in canonical form (`bulkhead policy fmt` leaves
    /// them unchanged). The policy allows every normal flow of [`Estate::flows`] and
    /// nothing the attacker or the unknown devices do.
    pub fn policy_files(&self) -> Vec<(String, String)> {
        crate::policy::files(self)
    }
}

fn shared_workloads(config: &SimConfig) -> Vec<SimWorkload> {
    let s = &config.shared;
    let mut out = Vec::new();
    // Fixed host numbers that an operator would recognise (dns .53, ntp .123).
    for (role, count, prefix, base, kind) in [
        (Role::Dns, s.dns, "dns", 53u8, WorkloadKind::Vm),
        (Role::Ntp, s.ntp, "ntp", 123, WorkloadKind::Vm),
        (Role::Directory, s.directory, "dc", 10, WorkloadKind::Vm),
        (Role::Monitoring, s.monitoring, "mon", 90, WorkloadKind::Vm),
        (Role::Backup, s.backup, "backup", 200, WorkloadKind::Host),
    ] {
        for n in 0..count {
            let name = format!("{prefix}-{}", n + 1);
            let (os, os_version) = if role == Role::Directory {
                ("windows", "2022")
            } else {
                ("debian", "12")
            };
            let labels = BTreeMap::from([
                ("app".to_string(), "infra".to_string()),
                ("env".to_string(), "shared".to_string()),
                ("loc".to_string(), "dc1".to_string()),
                ("role".to_string(), role.name().to_string()),
            ]);
            out.push(SimWorkload {
                hostname: format!("{name}.shared.corp"),
                name,
                kind,
                managed: true,
                addresses: vec![IpAddr::V4(Ipv4Addr::new(10, 0, 0, base + n as u8))],
                os,
                os_version,
                labels,
                mode: EnforcementMode::Monitor,
                owner: "infra@example.com".into(),
                role,
                app: None,
                env: None,
                idle: false,
            });
        }
    }
    out
}

fn app_workload(
    config: &SimConfig,
    ai: usize,
    app: &str,
    env: Env,
    role: Role,
    n: usize,
    idle: bool,
) -> SimWorkload {
    let name = format!("{app}-{}-{}{}", role.name(), env.letter(), n + 1);
    let (os, prod_v, dev_v) = APP_OS[ai % APP_OS.len()];
    let (os, os_version) = match (role, env) {
        (Role::Db, _) => ("rhel", "9.4"),
        (_, Env::Prod) => (os, prod_v),
        (_, Env::Dev) => (os, dev_v),
    };
    let kind = if role == Role::App && ai % 3 == 1 {
        WorkloadKind::Container
    } else {
        WorkloadKind::Vm
    };
    let mut addresses = vec![IpAddr::V4(app_v4(env, ai, role, n))];
    if config.ipv6 && env == Env::Prod && role == Role::Web {
        addresses.push(IpAddr::V6(app_v6(env, ai, role, n)));
    }
    let labels = BTreeMap::from([
        ("app".to_string(), app.to_string()),
        ("env".to_string(), env.name().to_string()),
        ("loc".to_string(), "dc1".to_string()),
        ("role".to_string(), role.name().to_string()),
    ]);
    SimWorkload {
        hostname: format!("{name}.{}.corp", env.name()),
        name,
        kind,
        managed: true,
        addresses,
        os,
        os_version,
        labels,
        mode: match env {
            Env::Prod => config.prod_mode,
            Env::Dev => config.dev_mode,
        },
        owner: format!("{app}-team@example.com"),
        role,
        app: Some(ai),
        env: Some(env),
        idle,
    }
}

fn make_attacker(config: &SimConfig, workloads: &[SimWorkload]) -> Attacker {
    let (addr, ephemeral) = match config.attacker_origin {
        AttackerOrigin::DevWeb => {
            let w = workloads
                .iter()
                .find(|w| w.app == Some(0) && w.env == Some(Env::Dev) && w.role == Role::Web)
                .expect("validated: a dev web server exists");
            (w.ipv4(), w.ephemeral_ports())
        }
        AttackerOrigin::UnknownLaptop => (IpAddr::V4(LAPTOP), ephemeral_ports("windows")),
    };
    let prod0 = |role: Role| {
        workloads
            .iter()
            .filter(move |w| w.app == Some(0) && w.env == Some(Env::Prod) && w.role == role)
    };
    // The application tier is the interesting subnet: it can reach the databases.
    let scan_role = [Role::App, Role::Db, Role::Web]
        .into_iter()
        .find(|&r| prod0(r).next().is_some())
        .expect("validated: a prod host exists");
    let first = app_v4(Env::Prod, 0, scan_role, 0).octets();
    let mut targets: Vec<IpAddr> = Vec::new();
    for role in [Role::Db, Role::App, Role::Web] {
        targets.extend(prod0(role).take(2).map(SimWorkload::ipv4));
    }
    targets.truncate(3);
    Attacker {
        origin: config.attacker_origin,
        addr,
        scanned_subnet: (Ipv4Addr::new(first[0], first[1], first[2], 0), 24),
        targets,
        ephemeral,
    }
}
