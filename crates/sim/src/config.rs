use bulkhead_model::EnforcementMode;

/// An environment of the estate. Every application exists once per environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Env {
    Prod,
    Dev,
}

impl Env {
    /// The `env` label value.
    pub fn name(self) -> &'static str {
        match self {
            Env::Prod => "prod",
            Env::Dev => "dev",
        }
    }

    /// The letter in workload names (`shop-web-p1`, `shop-web-d1`).
    pub(crate) fn letter(self) -> char {
        match self {
            Env::Prod => 'p',
            Env::Dev => 'd',
        }
    }

    /// Second octet of the environment's 10.x.0.0/12.
    pub(crate) fn octet(self) -> u8 {
        match self {
            Env::Prod => 16,
            Env::Dev => 32,
        }
    }
}

/// How many servers each shared service has. Shared services live in 10.0.0.0/24.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SharedServices {
    pub dns: usize,
    pub ntp: usize,
    pub directory: usize,
    pub backup: usize,
    pub monitoring: usize,
}

impl Default for SharedServices {
    fn default() -> Self {
        SharedServices {
            dns: 2,
            ntp: 1,
            directory: 1,
            backup: 1,
            monitoring: 1,
        }
    }
}

/// Where the attack comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AttackerOrigin {
    /// The first dev web server of the first application is compromised: an inventory
    /// workload, so the guardrail `deny-dev-to-prod` is what stops it.
    #[default]
    DevWeb,
    /// A laptop nobody registered (10.98.0.66): outside the inventory, so only the
    /// default deny stops it.
    UnknownLaptop,
}

/// What to generate. `SimConfig::default()` is a small estate: three applications in
/// prod and dev, the shared services, a little sprawl, no attacker, ten minutes of
/// traffic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimConfig {
    pub seed: u64,
    /// Number of applications (at most [`SimConfig::MAX_APPS`]). The first ten have
    /// names (shop, payments, hr, ...), the rest `app010`, `app011`, ...
    pub apps: usize,
    /// Web servers per application and environment (at most [`SimConfig::MAX_PER_ROLE`]).
    pub web: usize,
    /// Application servers per application and environment.
    pub app: usize,
    /// Database servers per application and environment.
    pub db: usize,
    /// Environments, each with every application. Duplicates are ignored.
    pub envs: Vec<Env>,
    pub shared: SharedServices,
    /// Addresses that appear in traffic but not in the inventory (sprawl), in 10.99.0.0/16.
    pub unknown_devices: usize,
    /// Inventory workloads that never send or receive anything.
    pub idle_workloads: usize,
    /// Adds a port scan of a prod subnet followed by lateral movement.
    pub attacker: bool,
    pub attacker_origin: AttackerOrigin,
    /// Prod web servers also get an IPv6 address and some internet clients use IPv6.
    pub ipv6: bool,
    /// Enforcement mode written into the inventory for each environment's workloads.
    pub prod_mode: EnforcementMode,
    pub dev_mode: EnforcementMode,
    /// Start of the traffic, unix milliseconds.
    pub start_ms: i64,
    pub duration_ms: i64,
    /// Rate of normal and unknown-device flows. Every conversation of the estate still
    /// appears at least once, so a very low rate yields more flows than it asks for.
    pub flows_per_minute: usize,
    /// Which day of traffic: the estate and its conversations stay the same, the draws
    /// (times, internet clients, sizes, the attacker's probe order) differ, as on
    /// another day of the same network. Day 0 is what earlier versions generated.
    pub day: u64,
}

impl SimConfig {
    pub const MAX_APPS: usize = 1024;
    pub const MAX_PER_ROLE: usize = 240;
    pub const MAX_SHARED_PER_SERVICE: usize = 10;
    pub const MAX_UNKNOWN_DEVICES: usize = 60_000;
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            seed: 1,
            apps: 3,
            web: 2,
            app: 2,
            db: 1,
            envs: vec![Env::Prod, Env::Dev],
            shared: SharedServices::default(),
            unknown_devices: 3,
            idle_workloads: 2,
            attacker: false,
            attacker_origin: AttackerOrigin::DevWeb,
            ipv6: true,
            prod_mode: EnforcementMode::Monitor,
            dev_mode: EnforcementMode::Monitor,
            // 2024-03-04T09:00:00Z: a Monday morning, fixed so output never depends on the clock.
            start_ms: 1_709_542_800_000,
            duration_ms: 10 * 60_000,
            flows_per_minute: 600,
            day: 0,
        }
    }
}

impl SimConfig {
    /// The seed of the traffic draws: the seed itself on day 0, mixed with the day after.
    pub(crate) fn traffic_seed(&self) -> u64 {
        if self.day == 0 {
            self.seed
        } else {
            self.seed ^ self.day.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(29)
        }
    }
}

/// A configuration the address plan cannot hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "invalid simulation config: {}", self.0)
    }
}

impl std::error::Error for ConfigError {}

impl SimConfig {
    /// Checks the limits of the address plan (see the crate README).
    pub fn validate(&self) -> Result<(), ConfigError> {
        let err = |m: String| Err(ConfigError(m));
        if self.apps > Self::MAX_APPS {
            return err(format!("apps is {}, at most {}", self.apps, Self::MAX_APPS));
        }
        for (what, n) in [("web", self.web), ("app", self.app), ("db", self.db)] {
            if n > Self::MAX_PER_ROLE {
                return err(format!("{what} is {n}, at most {}", Self::MAX_PER_ROLE));
            }
        }
        let s = &self.shared;
        for (what, n) in [
            ("shared.dns", s.dns),
            ("shared.ntp", s.ntp),
            ("shared.directory", s.directory),
            ("shared.backup", s.backup),
            ("shared.monitoring", s.monitoring),
        ] {
            if n > Self::MAX_SHARED_PER_SERVICE {
                return err(format!(
                    "{what} is {n}, at most {}",
                    Self::MAX_SHARED_PER_SERVICE
                ));
            }
        }
        if self.unknown_devices > Self::MAX_UNKNOWN_DEVICES {
            return err(format!(
                "unknown_devices is {}, at most {}",
                self.unknown_devices,
                Self::MAX_UNKNOWN_DEVICES
            ));
        }
        let mut envs = self.envs.clone();
        envs.sort();
        envs.dedup();
        let idle_room = self.apps * envs.len() * Self::MAX_PER_ROLE;
        if self.idle_workloads > idle_room {
            return err(format!(
                "idle_workloads is {}, at most {idle_room} (apps x envs x {})",
                self.idle_workloads,
                Self::MAX_PER_ROLE
            ));
        }
        if self.duration_ms < 0 {
            return err(format!(
                "duration_ms is {}, must not be negative",
                self.duration_ms
            ));
        }
        if self.start_ms < 0 || self.start_ms.checked_add(self.duration_ms).is_none() {
            return err("start_ms must be a non-negative unix time in milliseconds".into());
        }
        Ok(())
    }
}
