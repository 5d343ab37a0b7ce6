//! The buttons of a whole-system run besides the scripted stdin presses
//! ([`crate::pipeline::StdinPresses`]): a real one, pressed by the person at the rig when asked
//! ([`Operator`]), and the kernel's GPIO simulator ([`GpioSim`]), a GPIO chip whose line the
//! test pulls up and down through sysfs while lookupd watches it through the character device,
//! as it watches a real button.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::pipeline::Button;

/// A real button, pressed by a person at the rig: each press is asked for on stderr, and waited
/// for up to `timeout`.
#[derive(Debug)]
pub struct Operator {
    /// The trigger lookupd watches (`gpio:gpiochip0:17:active-low`).
    pub trigger: String,
    pub timeout: Duration,
    /// What to show for each press (`the replay camera shows item-3`), by press.
    pub hints: Vec<String>,
}

impl Button for Operator {
    fn press(&mut self, n: usize, count: usize, _: &mut dyn Write) -> Result<()> {
        let hint = self.hints.get(n).map(String::as_str).unwrap_or_default();
        eprintln!(
            ">>> press the button ({}) once, for lookup {} of {count}{}{hint} [waiting {} s]",
            self.trigger,
            n + 1,
            if hint.is_empty() { "" } else { ": " },
            self.timeout.as_secs()
        );
        Ok(())
    }
    fn timeout(&self) -> Duration {
        self.timeout
    }
    fn no_report(&self, n: usize) -> String {
        format!(
            "no lookup report within {} s of asking for press {} on {}: press the button when \
             asked, check its wiring and the line named by LOOKUP_HIL_TRIGGER, or allow more \
             time with LOOKUP_HIL_PRESS_TIMEOUT_S",
            self.timeout.as_secs(),
            n + 1,
            self.trigger
        )
    }
    fn is_gpio(&self) -> bool {
        true
    }
}

/// Where the kernel offers the GPIO simulator (module gpio-sim, configfs mounted).
pub const GPIO_SIM_CONFIGFS: &str = "/sys/kernel/config/gpio-sim";

/// A simulated GPIO chip of one line (offset 0), made through configfs and removed on drop.
/// The line is an input for lookupd; the test sets its level with the simulator's `pull`
/// attribute (`pull-up` reads as high: pressed, for an active-high button).
#[derive(Debug)]
pub struct GpioSim {
    /// The chip's configfs directory.
    device: PathBuf,
    /// The character device's name (`gpiochip3`).
    pub chip: String,
    /// `/sys/devices/platform/gpio-sim.N/gpiochipM/sim_gpio0/pull`.
    pull: PathBuf,
    /// How long a press is held after its report, and the line left low after it.
    settle: Duration,
}

/// Why the simulator cannot be used here.
#[derive(Debug)]
pub enum SimUnavailable {
    /// This kernel does not offer it, or this user may not create chips: said in the rig line.
    NotOffered(String),
    /// It is offered but making the chip failed: the test fails with this.
    Failed(anyhow::Error),
}

impl GpioSim {
    /// Creates a chip named `lookup-hil-<pid>-<tag>` with one line, pulled down.
    pub fn create(tag: &str) -> Result<GpioSim, SimUnavailable> {
        let root = Path::new(GPIO_SIM_CONFIGFS);
        if !root.is_dir() {
            return Err(SimUnavailable::NotOffered(format!(
                "gpio-sim not offered by this kernel: no {GPIO_SIM_CONFIGFS} (needs \
                 CONFIG_GPIO_SIM, `modprobe gpio-sim` and configfs mounted)"
            )));
        }
        let device = root.join(format!("lookup-hil-{}-{tag}", std::process::id()));
        if let Err(e) = std::fs::create_dir(&device) {
            use std::io::ErrorKind::{PermissionDenied, ReadOnlyFilesystem};
            return Err(match e.kind() {
                PermissionDenied | ReadOnlyFilesystem => SimUnavailable::NotOffered(format!(
                    "gpio-sim offered but {GPIO_SIM_CONFIGFS} is not writable by this user ({e})"
                )),
                _ => SimUnavailable::Failed(
                    anyhow::Error::new(e).context(format!("mkdir {}", device.display())),
                ),
            });
        }
        let mut sim = GpioSim {
            device,
            chip: String::new(),
            pull: PathBuf::new(),
            settle: Duration::from_millis(100),
        };
        sim.go_live().map_err(SimUnavailable::Failed)?;
        Ok(sim)
    }

    fn go_live(&mut self) -> Result<()> {
        let bank = self.device.join("gpio-bank0");
        mkdir(&bank)?;
        write(&bank.join("num_lines"), "1")?;
        write(&self.device.join("live"), "1")?;
        let dev_name = read(&self.device.join("dev_name"))?;
        self.chip = read(&bank.join("chip_name"))?;
        self.pull = Path::new("/sys/devices/platform")
            .join(&dev_name)
            .join(&self.chip)
            .join("sim_gpio0/pull");
        self.set(false)?;
        let dev = Path::new("/dev").join(&self.chip);
        if !dev.exists() {
            bail!(
                "gpio-sim made {} but {} does not exist",
                self.chip,
                dev.display()
            );
        }
        Ok(())
    }

    /// The trigger spec lookupd is given for the line (active-high).
    pub fn trigger(&self) -> String {
        format!("gpio:{}:0", self.chip)
    }

    /// Pulls the line up (`true`: pressed) or down.
    pub fn set(&self, high: bool) -> Result<()> {
        write(&self.pull, if high { "pull-up" } else { "pull-down" })
    }
}

impl Button for GpioSim {
    fn press(&mut self, _: usize, _: usize, _: &mut dyn Write) -> Result<()> {
        // Held until the report (as a person holds a button until the beep), so a press can
        // never be shorter than lookupd's debounce or poll.
        self.set(true)
    }
    fn release(&mut self) -> Result<()> {
        self.set(false)?;
        // Low long enough for the debounced level to fall before the next press.
        std::thread::sleep(self.settle);
        Ok(())
    }
    fn timeout(&self) -> Duration {
        Duration::from_secs(60)
    }
    fn no_report(&self, n: usize) -> String {
        format!(
            "no lookup report within {} s of pulling up line 0 of the simulated {} (press {})",
            self.timeout().as_secs(),
            self.chip,
            n + 1
        )
    }
    fn is_gpio(&self) -> bool {
        true
    }
}

impl Drop for GpioSim {
    fn drop(&mut self) {
        let bank = self.device.join("gpio-bank0");
        let steps = [
            write(&self.device.join("live"), "0"),
            std::fs::remove_dir(&bank).with_context(|| format!("rmdir {}", bank.display())),
            std::fs::remove_dir(&self.device)
                .with_context(|| format!("rmdir {}", self.device.display())),
        ];
        for step in steps {
            if let Err(e) = step {
                eprintln!("removing the simulated GPIO chip: {e:#}");
            }
        }
    }
}

fn mkdir(path: &Path) -> Result<()> {
    std::fs::create_dir(path).with_context(|| format!("mkdir {}", path.display()))
}

fn write(path: &Path, value: &str) -> Result<()> {
    std::fs::write(path, value).with_context(|| format!("writing {value:?} to {}", path.display()))
}

fn read(path: &Path) -> Result<String> {
    Ok(std::fs::read_to_string(path)
        .with_context(|| format!("reading {}", path.display()))?
        .trim()
        .to_string())
}
