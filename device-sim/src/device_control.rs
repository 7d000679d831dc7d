//! What a device's control session may change about how the device sends
//! datagrams (its report interval, reboot requests, its session key, the
//! hub its datagrams go to), and
//! the other way round, what the sender tells the session (the device
//! rebooted by itself: a random reboot; how many of its datagrams still
//! wait out their jitter). [`DeviceControl`] is shared (in an `Arc`)
//! between the session and the UDP sender; a fleet-wide [`Notify`] wakes
//! the sender so a change is applied at once rather than at the device's
//! next send, and a per-device [`watch`] channel wakes the session.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use sensor_hub_protocol::auth::DatagramKey;
use tokio::sync::{watch, Notify};
use tokio::time::Instant;

use crate::device::SimDevice;

/// Control state of one device.
#[derive(Debug)]
pub(crate) struct DeviceControl {
    /// Current report interval, in ms (at least 1).
    interval_ms: AtomicU64,
    /// A reboot the sender has not yet applied: silent until this instant,
    /// then the sequence restarts at 0.
    reboot_until: Mutex<Option<Instant>>,
    /// Something changed since the sender last looked.
    changed: AtomicBool,
    /// Wakes the fleet's UDP sender.
    wake: Arc<Notify>,
    /// How often the device rebooted by itself; the session watches it.
    own_reboots: watch::Sender<u64>,
    /// For a keyed device: whether it has a session to send under (set by
    /// a keyed welcome, lost at a reboot and when a new hello begins) and
    /// its datagram key. `None`: a device without a key, which sends
    /// untagged whatever its session.
    session: Option<Mutex<SessionState>>,
    /// Keyed welcomes so far: numbers the sessions.
    keyed_welcomes: AtomicU64,
    /// Datagrams waiting in the device's jitter delay line (the sender
    /// keeps it up to date).
    queued: AtomicU64,
    /// Wakes a hello waiting for the delay line to empty.
    drained: Notify,
    /// The hub the device's datagrams go to: an index into the fleet's
    /// hubs (0: the primary). The session sets it, the sender reads it for
    /// every datagram (one relaxed load: no lock on the hot path).
    hub: AtomicUsize,
}

/// A device's session as its datagrams see it.
#[derive(Debug, Clone)]
enum SessionState {
    /// No welcome since boot: a real device says hello before it sends.
    Down,
    /// Welcomed with a token: datagrams go untagged.
    Token,
    /// Welcomed with a key: datagrams are tagged with this session key.
    Keyed(SessionKey),
}

/// A keyed session's datagram key, and which of the device's sessions it
/// belongs to (1 for the first keyed welcome, then counting up).
#[derive(Debug, Clone)]
pub(crate) struct SessionKey {
    /// The key the session's datagrams are tagged with.
    pub key: DatagramKey,
    /// The session's number.
    pub session: u64,
}

/// What the sender may do with a device's next datagram.
#[derive(Debug, Clone)]
pub(crate) enum Sealing {
    /// The device has no key: send it untagged.
    Plain,
    /// Tag it with this session key.
    Key(SessionKey),
    /// The device has a key but no session since it booted: hold back (it
    /// cannot tag, and an untagged datagram would only be dropped).
    Waiting,
}

/// A change for the sender to apply, taken by [`DeviceControl::take_change`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ControlChange {
    /// The interval now in force, in ms.
    pub interval_ms: u64,
    /// If the device rebooted: send nothing until then, then restart the
    /// sequence at 0.
    pub reboot_until: Option<Instant>,
}

impl DeviceControl {
    fn new(interval_ms: u64, wake: Arc<Notify>, keyed: bool) -> DeviceControl {
        DeviceControl {
            interval_ms: AtomicU64::new(interval_ms.max(1)),
            reboot_until: Mutex::new(None),
            changed: AtomicBool::new(false),
            wake,
            own_reboots: watch::Sender::new(0),
            session: keyed.then(|| Mutex::new(SessionState::Down)),
            keyed_welcomes: AtomicU64::new(0),
            queued: AtomicU64::new(0),
            drained: Notify::new(),
            hub: AtomicUsize::new(0),
        }
    }

    /// The hub the device's datagrams go to now (an index into the fleet's
    /// hubs, primary first).
    pub fn hub(&self) -> usize {
        self.hub.load(Ordering::Relaxed)
    }

    /// Sends the device's datagrams to hub `index` from now on (the one its
    /// control session holds or is opening). Datagrams already waiting out
    /// their jitter go there too when they are released.
    pub fn set_hub(&self, index: usize) {
        self.hub.store(index, Ordering::Relaxed);
    }

    /// Whether the device has a key (it sends only under a keyed session).
    pub fn is_keyed(&self) -> bool {
        self.session.is_some()
    }

    /// A welcome arrived: datagrams go out from now on, tagged with `key`
    /// when the session is keyed.
    pub fn session_up(&self, key: Option<DatagramKey>) {
        if let Some(slot) = &self.session {
            let state = match key {
                Some(key) => SessionState::Keyed(SessionKey {
                    key,
                    session: self.keyed_welcomes.fetch_add(1, Ordering::SeqCst) + 1,
                }),
                None => SessionState::Token,
            };
            *slot.lock().unwrap_or_else(PoisonError::into_inner) = state;
        }
    }

    /// A keyed hello begins: the hub replaces the session key as soon as it
    /// has checked the hello, before the device hears of it, so a datagram
    /// tagged with the old key from now on could reach it too late. The
    /// device sends nothing until the welcome (nothing changes for a device
    /// without a key).
    pub fn hello_begins(&self) {
        self.session_lost();
    }

    /// How many of the device's datagrams wait in its delay line now (for
    /// the sender).
    pub fn set_queued(&self, datagrams: usize) {
        self.queued.store(datagrams as u64, Ordering::SeqCst);
        if datagrams == 0 {
            self.drained.notify_waiters();
        }
    }

    /// Completes once none of the device's datagrams waits in its delay
    /// line. A keyed hello waits for it after [`DeviceControl::hello_begins`],
    /// so no datagram tagged with the old key reaches the hub after it began
    /// the new session.
    pub async fn queue_drained(&self) {
        loop {
            let notified = self.drained.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.queued.load(Ordering::SeqCst) == 0 {
                return;
            }
            notified.await;
        }
    }

    /// A reboot: the session (and its key, kept in RAM) is gone.
    fn session_lost(&self) {
        if let Some(slot) = &self.session {
            *slot.lock().unwrap_or_else(PoisonError::into_inner) = SessionState::Down;
        }
    }

    /// How the next datagram is to be sent.
    pub fn sealing(&self) -> Sealing {
        match &self.session {
            None => Sealing::Plain,
            Some(slot) => match &*slot.lock().unwrap_or_else(PoisonError::into_inner) {
                SessionState::Keyed(key) => Sealing::Key(key.clone()),
                SessionState::Token => Sealing::Plain,
                SessionState::Down => Sealing::Waiting,
            },
        }
    }

    /// The report interval in force, in ms.
    pub fn interval_ms(&self) -> u64 {
        self.interval_ms.load(Ordering::SeqCst)
    }

    /// Changes the report interval (0 is taken as 1 ms).
    pub fn set_interval_ms(&self, ms: u64) {
        self.interval_ms.store(ms.max(1), Ordering::SeqCst);
        self.mark_changed();
    }

    /// Asks the sender to stay silent for `pause`, then restart the
    /// sequence at 0. A second request during the pause extends it.
    pub fn request_reboot(&self, pause: Duration) {
        self.session_lost();
        let until = Instant::now() + pause;
        {
            let mut pending = self
                .reboot_until
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            *pending = Some(pending.map_or(until, |earlier| earlier.max(until)));
        }
        self.mark_changed();
    }

    /// The device rebooted by itself (the sender already silenced it): its
    /// control session must drop the connection and reconnect after the
    /// boot pause.
    pub fn device_rebooted(&self) {
        self.session_lost();
        self.own_reboots
            .send_modify(|count| *count = count.wrapping_add(1));
    }

    /// Follows the device's own reboots (for its control session).
    pub fn watch_own_reboots(&self) -> watch::Receiver<u64> {
        self.own_reboots.subscribe()
    }

    /// The change since the last call, if any (for the sender).
    pub fn take_change(&self) -> Option<ControlChange> {
        if !self.changed.swap(false, Ordering::SeqCst) {
            return None;
        }
        let reboot_until = self
            .reboot_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        Some(ControlChange {
            interval_ms: self.interval_ms(),
            reboot_until,
        })
    }

    fn mark_changed(&self) {
        self.changed.store(true, Ordering::SeqCst);
        // Stores a permit if the sender is busy, so no change is missed.
        self.wake.notify_one();
    }
}

/// The control state of every device of a fleet, by fleet index, and the
/// sender's wake-up.
#[derive(Debug)]
pub(crate) struct FleetControls {
    wake: Arc<Notify>,
    devices: Vec<Arc<DeviceControl>>,
}

impl FleetControls {
    /// Control state for each of `devices`, starting at their intervals;
    /// `keyed` devices send only under a keyed session.
    pub fn new(devices: &[SimDevice], keyed: bool) -> FleetControls {
        let wake = Arc::new(Notify::new());
        let devices = devices
            .iter()
            .map(|d| Arc::new(DeviceControl::new(d.interval_ms, wake.clone(), keyed)))
            .collect();
        FleetControls { wake, devices }
    }

    /// Control state of the device at `index`.
    pub fn device(&self, index: usize) -> Option<&Arc<DeviceControl>> {
        self.devices.get(index)
    }

    /// All devices' control state, in fleet order.
    pub fn devices(&self) -> &[Arc<DeviceControl>] {
        &self.devices
    }

    /// Completes when some device's control state may have changed.
    pub async fn changed(&self) {
        self.wake.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn control() -> DeviceControl {
        DeviceControl::new(1_000, Arc::new(Notify::new()), false)
    }

    #[test]
    fn nothing_to_take_until_something_changes() {
        let c = control();
        assert_eq!(c.take_change(), None);
        c.set_interval_ms(250);
        assert_eq!(
            c.take_change(),
            Some(ControlChange {
                interval_ms: 250,
                reboot_until: None
            })
        );
        assert_eq!(c.take_change(), None);
        assert_eq!(c.interval_ms(), 250);
    }

    #[test]
    fn each_keyed_welcome_is_a_new_session_and_a_hello_gives_the_old_key_up() {
        let keyed = DeviceControl::new(10, Arc::new(Notify::new()), true);
        assert!(keyed.is_keyed());
        assert!(matches!(keyed.sealing(), Sealing::Waiting));
        keyed.session_up(Some(DatagramKey::new(&[1; 32])));
        let Sealing::Key(first) = keyed.sealing() else {
            panic!("a session key");
        };
        keyed.hello_begins();
        assert!(matches!(keyed.sealing(), Sealing::Waiting));
        keyed.session_up(Some(DatagramKey::new(&[2; 32])));
        let Sealing::Key(second) = keyed.sealing() else {
            panic!("a session key");
        };
        assert_eq!((first.session, second.session), (1, 2));
        // Without a key nothing waits.
        let plain = control();
        assert!(!plain.is_keyed());
        plain.hello_begins();
        assert!(matches!(plain.sealing(), Sealing::Plain));
    }

    #[tokio::test]
    async fn a_hello_waits_for_the_delay_line_to_empty() {
        let c = control();
        // Nothing queued: at once.
        tokio::time::timeout(Duration::from_secs(1), c.queue_drained())
            .await
            .expect("nothing to wait for");
        c.set_queued(2);
        let waiting = c.queue_drained();
        tokio::pin!(waiting);
        assert!(
            tokio::time::timeout(Duration::from_millis(20), waiting.as_mut())
                .await
                .is_err(),
            "two datagrams still wait"
        );
        c.set_queued(1);
        c.set_queued(0);
        tokio::time::timeout(Duration::from_secs(1), waiting)
            .await
            .expect("woken once the line is empty");
    }

    #[test]
    fn datagrams_go_to_the_primary_until_the_session_moves_them() {
        let c = control();
        assert_eq!(c.hub(), 0);
        c.set_hub(2);
        assert_eq!(c.hub(), 2);
        // Not a change for the sender's schedule: it reads the hub per datagram.
        assert_eq!(c.take_change(), None);
    }

    #[test]
    fn zero_interval_is_taken_as_one_ms() {
        let c = control();
        c.set_interval_ms(0);
        assert_eq!(c.interval_ms(), 1);
    }

    #[test]
    fn a_reboot_is_taken_once_and_a_second_one_extends_the_pause() {
        let c = control();
        let before = Instant::now();
        c.request_reboot(Duration::from_millis(500));
        c.request_reboot(Duration::from_millis(100));
        let change = c.take_change().expect("a change");
        let until = change.reboot_until.expect("a reboot");
        assert!(until >= before + Duration::from_millis(500));
        assert_eq!(change.interval_ms, 1_000);
        assert_eq!(c.take_change(), None);
    }

    #[tokio::test]
    async fn the_session_hears_of_the_devices_own_reboots_but_not_of_older_ones() {
        let c = control();
        c.device_rebooted();
        let mut reboots = c.watch_own_reboots();
        assert!(!reboots.has_changed().expect("open"));
        c.device_rebooted();
        tokio::time::timeout(Duration::from_secs(1), reboots.changed())
            .await
            .expect("woken")
            .expect("open");
        assert_eq!(*reboots.borrow_and_update(), 2);
        // Not a change the sender has to apply: it did so already.
        assert_eq!(c.take_change(), None);
    }

    #[tokio::test]
    async fn a_change_wakes_the_sender_even_if_it_was_not_waiting() {
        let fleet = FleetControls {
            wake: Arc::new(Notify::new()),
            devices: Vec::new(),
        };
        let c = DeviceControl::new(10, fleet.wake.clone(), false);
        c.set_interval_ms(20);
        tokio::time::timeout(Duration::from_secs(1), fleet.changed())
            .await
            .expect("woken by the stored permit");
    }
}
