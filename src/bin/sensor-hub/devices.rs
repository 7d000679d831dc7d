//! `sensor-hub device add|list|remove|import`: adopting devices and making
//! their keys, run on the hub's machine (whoever can write the device file
//! is its owner). Changes go through the device file's lock; a running hub
//! picks them up within a second.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Subcommand;
use sensor_hub::clock::Clock;
use sensor_hub::config::HubConfig;
use sensor_hub::device_file::{key_hex, parse_key, random_key, DeviceFile};
use serde::Deserialize;

/// `sensor-hub device …`
#[derive(Debug, Subcommand)]
pub enum DeviceCommand {
    /// Adopt a device and make its key; prints what its firmware needs.
    Add {
        /// The device id its datagrams and hello carry.
        #[arg(long)]
        id: u32,
        /// A name for people.
        #[arg(long, default_value = "")]
        name: String,
        /// Adopt it without a key: for a device that only sends UDP and
        /// cannot authenticate (anyone on the network can send as it).
        #[arg(long)]
        no_key: bool,
    },
    /// List adopted devices (never their keys).
    List,
    /// Forget a device: its key stops working and the hub drops it.
    Remove {
        /// The device id.
        #[arg(long)]
        id: u32,
    },
    /// Adopt many devices from a JSON file of `{"id", "name", "key"}`
    /// objects (`key`: 64 hex digits, or null for none); devices already
    /// adopted get the file's key.
    Import {
        /// The file ("-" for standard input).
        file: PathBuf,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ImportedDevice {
    id: u32,
    #[serde(default)]
    name: String,
    key: Option<String>,
}

fn file(config: &HubConfig) -> DeviceFile {
    DeviceFile::new(&config.devices.keys_path)
}

/// `sensor-hub device …`.
pub fn device(config: &HubConfig, command: DeviceCommand) -> anyhow::Result<()> {
    let file = file(config);
    let now = Clock::system().now().wall_ms;
    match command {
        DeviceCommand::Add { id, name, no_key } => {
            let key = if no_key { None } else { Some(random_key()?) };
            file.update(|list| list.add(id, &name, key, now))?;
            println!(
                "Device {id} adopted (device file {}).",
                file.path().display()
            );
            match key {
                Some(key) => {
                    println!("Its firmware needs:");
                    println!("  device id:        {id}");
                    println!("  device key:       {}", key_hex(&key));
                    println!(
                        "  control channel:  port {} (TCP)",
                        config.control.bind.port()
                    );
                    println!("  datagrams:        port {} (UDP)", config.udp.bind.port());
                    println!(
                        "The key is a secret: keep it only on the device. It says hello with a \
                         challenge request and tags every datagram (docs/PROTOCOL.md, \
                         \"Device authentication\")."
                    );
                }
                None => println!(
                    "It has no key: its untagged datagrams are accepted for id {id}, and anyone \
                     on the network can send as it. Prefer a key where the device can keep one."
                ),
            }
        }
        DeviceCommand::List => {
            let (list, _) = file.load()?;
            if list.devices.is_empty() {
                println!("no adopted devices; adopt one with: sensor-hub device add --id ID");
            }
            for d in &list.devices {
                println!(
                    "{:>10}  {:<6}  added {} ms  {}",
                    d.id,
                    if d.key.is_some() { "key" } else { "no key" },
                    d.added_ms,
                    d.name
                );
            }
        }
        DeviceCommand::Remove { id } => match file.update(|list| Ok(list.remove(id)))? {
            Some(d) => println!(
                "device {} ({}) removed; the hub forgets it within a second",
                d.id, d.name
            ),
            None => {
                anyhow::bail!("device {id} is not adopted; `sensor-hub device list` shows them")
            }
        },
        DeviceCommand::Import { file: path } => {
            let text = if path.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin()).context("reading standard input")?
            } else {
                std::fs::read_to_string(&path)
                    .with_context(|| format!("reading {}", path.display()))?
            };
            let devices: Vec<ImportedDevice> = serde_json::from_str(&text)
                .context("the import file must be a JSON list of {\"id\", \"name\", \"key\"}")?;
            let mut parsed = Vec::with_capacity(devices.len());
            for d in devices {
                let key = match d.key.as_deref() {
                    Some(text) => Some(parse_key(text).with_context(|| {
                        format!("the key of device {} is not 64 hex digits", d.id)
                    })?),
                    None => None,
                };
                parsed.push((d.id, d.name, key));
            }
            let count = parsed.len();
            file.update(|list| {
                for (id, name, key) in parsed {
                    list.remove(id);
                    list.add(id, &name, key, now)?;
                }
                Ok(())
            })?;
            println!(
                "{count} devices adopted (device file {})",
                file.path().display()
            );
        }
    }
    Ok(())
}
