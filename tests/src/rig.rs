//! The rig a whole-system run uses: each part real when the environment names it, emulated
//! otherwise, and always said (see [`Rig::describe`]):
//! - `LOOKUP_HIL_CAMERA` (`/dev/video0` or any camera URI): the device's camera instead of the
//!   replay camera;
//! - `LOOKUP_HIL_TRIGGER` (`gpio:gpiochip0:17:active-low`): a real button, pressed by the
//!   person at the rig when the test asks, each within `LOOKUP_HIL_PRESS_TIMEOUT_S` seconds
//!   (default 60); without it, the line of a simulated GPIO chip (gpio-sim) where this kernel
//!   offers one and lookupd runs on this machine, else scripted presses on lookupd's stdin;
//! - `LOOKUP_HIL_LED` (`gpiochip0:18`): the status LED;
//! - `LOOKUP_HIL_TARGET` (`dir:PATH` or `ssh://[user@]host[:port]/PATH`, with the ssh options of
//!   `FLASH_SSH_OPTIONS`): the device; default a temporary directory of this machine;
//! - `LOOKUP_HIL_RUNTIME` (`cpu`, `gpu`, `auto`): lookupd's model runtime; default `cpu`.

use std::time::Duration;

use crate::button::{GpioSim, SimUnavailable};
use crate::sshd::Sshd;

/// The button of a run.
#[derive(Debug)]
pub enum Trigger {
    /// A real button (`LOOKUP_HIL_TRIGGER`), pressed by the operator.
    Real(String),
    /// A line of the kernel's GPIO simulator, on this machine.
    Sim(GpioSim),
    /// Scripted presses on lookupd's stdin, and why the simulator is not used.
    Scripted(String),
}

/// The device of a run.
#[derive(Debug)]
pub enum Target {
    /// A real target (`LOOKUP_HIL_TARGET`) and the ssh options for it (`FLASH_SSH_OPTIONS`).
    Real { spec: String, ssh_options: String },
    /// A temporary directory of this machine.
    TempDir(tempfile::TempDir),
    /// A directory of this machine served by a real OpenSSH server on 127.0.0.1: the ssh path
    /// end to end (deploy, self-test, frames copied with scp, lookupd run over ssh).
    EmulatedSsh { sshd: Sshd, root: tempfile::TempDir },
}

#[derive(Debug)]
pub struct Rig {
    /// A real camera's URI.
    pub camera: Option<String>,
    pub trigger: Trigger,
    /// A real LED's line.
    pub led: Option<String>,
    pub target: Target,
    pub runtime: String,
}

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// The emulated button: the simulator's line where lookupd runs on this machine and the kernel
/// offers one; else scripted stdin presses, saying why.
fn emulated_trigger(local: bool, tag: &str) -> Trigger {
    if !local {
        return Trigger::Scripted(
            "the device is another machine: gpio-sim would simulate a line of this one".into(),
        );
    }
    match GpioSim::create(tag) {
        Ok(sim) => Trigger::Sim(sim),
        Err(SimUnavailable::NotOffered(why)) => Trigger::Scripted(why),
        Err(SimUnavailable::Failed(e)) => {
            panic!("gpio-sim is offered here but making a simulated chip failed: {e:#}")
        }
    }
}

impl Rig {
    /// The rig the environment names, each part not named emulated.
    pub fn from_env() -> Rig {
        let target = match var("LOOKUP_HIL_TARGET") {
            Some(spec) => Target::Real {
                spec,
                ssh_options: var("FLASH_SSH_OPTIONS").unwrap_or_default(),
            },
            None => Target::TempDir(tempfile::tempdir().expect("a temporary directory")),
        };
        let remote = matches!(&target, Target::Real { spec, .. } if !spec.starts_with("dir:"));
        let trigger = match var("LOOKUP_HIL_TRIGGER") {
            Some(spec) => Trigger::Real(spec),
            None => emulated_trigger(!remote, "main"),
        };
        Rig {
            camera: var("LOOKUP_HIL_CAMERA").map(|c| {
                if c.contains("://") {
                    c
                } else {
                    format!("v4l2://{c}")
                }
            }),
            trigger,
            led: var("LOOKUP_HIL_LED"),
            target,
            runtime: var("LOOKUP_HIL_RUNTIME").unwrap_or_else(|| "cpu".into()),
        }
    }

    /// The emulated rig with an emulated ssh target: a real sshd on loopback serving a
    /// temporary directory (sshd missing or not starting is a panic saying so).
    pub fn emulated_ssh() -> Rig {
        let sshd = Sshd::start();
        let root = tempfile::tempdir().expect("a temporary directory");
        Rig {
            camera: None,
            trigger: emulated_trigger(true, "ssh"),
            led: None,
            target: Target::EmulatedSsh { sshd, root },
            runtime: "cpu".into(),
        }
    }

    /// The `flash` target: `dir:PATH` or `ssh://...`.
    pub fn target_spec(&self) -> String {
        match &self.target {
            Target::Real { spec, .. } => spec.clone(),
            Target::TempDir(dir) => format!("dir:{}", dir.path().display()),
            Target::EmulatedSsh { sshd, root } => sshd.url(root.path()),
        }
    }

    /// The options of every `ssh` and `scp` call (`FLASH_SSH_OPTIONS` for `flash`).
    pub fn ssh_options(&self) -> String {
        match &self.target {
            Target::Real { ssh_options, .. } => ssh_options.clone(),
            Target::TempDir(_) => String::new(),
            Target::EmulatedSsh { sshd, .. } => sshd.ssh_options(),
        }
    }

    /// How long to wait for each press of a real button (`LOOKUP_HIL_PRESS_TIMEOUT_S`).
    pub fn press_timeout() -> Duration {
        let seconds = var("LOOKUP_HIL_PRESS_TIMEOUT_S").map(|s| {
            s.trim()
                .parse::<u64>()
                .ok()
                .filter(|s| *s > 0)
                .unwrap_or_else(|| {
                    panic!("LOOKUP_HIL_PRESS_TIMEOUT_S={s:?} is not a positive number of seconds")
                })
        });
        Duration::from_secs(seconds.unwrap_or(60))
    }

    /// The `--trigger` flag of the button besides `stdin` (which always ends the run), if any.
    pub fn gpio_trigger(&self) -> Option<String> {
        match &self.trigger {
            Trigger::Real(spec) => Some(spec.clone()),
            Trigger::Sim(sim) => Some(sim.trigger()),
            Trigger::Scripted(_) => None,
        }
    }

    /// The trigger every report must name: lookupd's name of the button (the spec, an
    /// `:active-high` suffix dropped), or `stdin`.
    pub fn reported_trigger(&self) -> String {
        match self.gpio_trigger() {
            Some(spec) => spec
                .strip_suffix(":active-high")
                .unwrap_or(&spec)
                .to_string(),
            None => "stdin".into(),
        }
    }

    /// One line naming every part, real or emulated.
    pub fn describe(&self) -> String {
        let camera = match &self.camera {
            Some(c) => format!("REAL {c}"),
            None => "emulated (replay camera, one frame per press)".into(),
        };
        let trigger = match &self.trigger {
            Trigger::Real(spec) => format!(
                "REAL {spec} (the operator presses when asked, {} s each)",
                Rig::press_timeout().as_secs()
            ),
            Trigger::Sim(sim) => format!(
                "emulated (gpio-sim: line 0 of the simulated {}, pulled up per press)",
                sim.chip
            ),
            Trigger::Scripted(why) => format!("emulated (scripted stdin presses; {why})"),
        };
        let led = match &self.led {
            Some(l) => format!("REAL {l}"),
            None => "none".into(),
        };
        let target = match &self.target {
            Target::Real { spec, .. } => format!("REAL {spec}"),
            Target::TempDir(dir) => {
                format!("emulated (a temporary directory, {})", dir.path().display())
            }
            Target::EmulatedSsh { sshd, root } => format!(
                "emulated ssh device ({} at {}, sshd {}; lookupd runs over ssh, frames copied \
                 with scp)",
                sshd.version(),
                sshd.url(root.path()),
                sshd.binary.display()
            ),
        };
        format!(
            "rig: camera {camera}; trigger {trigger}; LED {led}; target {target}; runtime {}",
            self.runtime
        )
    }
}
