//! A deliberately malicious, test-only policy: its settings pick an attack on
//! the host's sandbox, and the host's tests check that each one is contained.
//!
//! Settings are `{"attack": "<name>"}`, plus `bytes` for the `huge-*` attacks
//! and `port` for `open-socket` (see [`HostileSettings`]); `{}` is the
//! harmless `none`. `validate` and `validate-raw` run the same attack, so the
//! component can be driven from `wasmtime run --invoke 'validate-raw(...)'`.
//! `settings-loop` attacks `validate-settings` itself.
//!
//! Attacks that exhaust a resource never return: they loop, sleep, allocate,
//! recurse or trap until the host stops them. The probes of the outside world
//! (`open-file`, `read-env`, `open-socket`) do return: with an accepting
//! verdict listing how each attempt was denied, or, if any attempt got
//! through, a rejection with code 500 whose message starts with `ESCAPED:`.
//! The reporting is done by pure functions ([`report_attempts`],
//! [`report_environment`]) so it can be unit-tested natively without
//! touching the machine running the tests.
//!
//! Never deploy this policy anywhere but a test.

use std::fmt;
use std::hint::black_box;
use std::io::Write;
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;

use portcullis_sdk::prelude::*;
use portcullis_sdk::serde_json::{Map, Value};
use serde::Deserialize;

/// Default length of the `huge-response` message and of the `huge-mutation`
/// string: 100 MB of `x`.
pub const DEFAULT_BYTES: usize = 100_000_000;

/// Default port `open-socket` tries to connect to on 127.0.0.1 (discard).
pub const DEFAULT_PORT: u16 = 9;

/// How long `sleep` sleeps, in one call: far beyond any evaluation timeout.
pub const SLEEP: Duration = Duration::from_secs(600);

/// How long `open-socket` waits for its TCP connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// The annotation `huge-mutation` adds to the object, holding the huge string.
pub const MUTATION_ANNOTATION: &str = "portcullis.test/hostile";

/// The attack a [`Hostile`] policy performs, named in kebab case in the
/// settings (`"huge-response"`, `"open-file"`, ...).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Attack {
    /// Accept: the control case.
    #[default]
    None,
    /// Spin forever in wasm code.
    Loop,
    /// Block in one 600-second WASI sleep.
    Sleep,
    /// Allocate (and touch) 1 MiB blocks until allocation fails.
    Grow,
    /// Recurse without bound.
    Recurse,
    /// Panic (a trap, after the panic message on stderr).
    Panic,
    /// Execute a wasm `unreachable` instruction.
    Unreachable,
    /// Reject with a `bytes`-long message.
    HugeResponse,
    /// Mutate the object, adding a `bytes`-long annotation.
    HugeMutation,
    /// Write to stdout forever.
    SpamStdout,
    /// Write to stderr forever.
    SpamStderr,
    /// Read `/etc/passwd`, list `/`, create `/tmp/hostile`.
    OpenFile,
    /// Read the environment variables and the arguments.
    ReadEnv,
    /// Connect over TCP to 127.0.0.1:`port`, bind a UDP socket.
    OpenSocket,
    /// Spin forever in `validate-settings`.
    SettingsLoop,
}

impl Attack {
    /// Every attack, in the order of the documentation.
    pub const ALL: [Attack; 15] = [
        Attack::None,
        Attack::Loop,
        Attack::Sleep,
        Attack::Grow,
        Attack::Recurse,
        Attack::Panic,
        Attack::Unreachable,
        Attack::HugeResponse,
        Attack::HugeMutation,
        Attack::SpamStdout,
        Attack::SpamStderr,
        Attack::OpenFile,
        Attack::ReadEnv,
        Attack::OpenSocket,
        Attack::SettingsLoop,
    ];

    /// The attack's name in the settings.
    pub fn name(self) -> &'static str {
        match self {
            Attack::None => "none",
            Attack::Loop => "loop",
            Attack::Sleep => "sleep",
            Attack::Grow => "grow",
            Attack::Recurse => "recurse",
            Attack::Panic => "panic",
            Attack::Unreachable => "unreachable",
            Attack::HugeResponse => "huge-response",
            Attack::HugeMutation => "huge-mutation",
            Attack::SpamStdout => "spam-stdout",
            Attack::SpamStderr => "spam-stderr",
            Attack::OpenFile => "open-file",
            Attack::ReadEnv => "read-env",
            Attack::OpenSocket => "open-socket",
            Attack::SettingsLoop => "settings-loop",
        }
    }
}

impl fmt::Display for Attack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The settings: `{"attack": "huge-response", "bytes": 10000000}`.
#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HostileSettings {
    /// The attack to perform; `none` when omitted.
    pub attack: Attack,
    /// Size of the `huge-response` message or `huge-mutation` string;
    /// [`DEFAULT_BYTES`] when omitted. Only allowed with those attacks.
    pub bytes: Option<usize>,
    /// Port `open-socket` connects to on 127.0.0.1; [`DEFAULT_PORT`] when
    /// omitted. Only allowed with that attack.
    pub port: Option<u16>,
    /// With `recurse`: stop at this depth and accept, instead of recursing
    /// without bound (to probe a stack limit from both sides).
    pub depth: Option<u64>,
    /// With `loop`: stop after this many iterations and accept, instead of
    /// spinning forever (a long but finite computation, to time how the
    /// host shares the CPU).
    pub iterations: Option<u64>,
}

impl Settings for HostileSettings {
    /// Spins forever for `settings-loop`. The SDK runs this before every
    /// call, so with `settings-loop` `validate` and `validate-raw` spin too
    /// (the host never calls them with settings it could not validate).
    fn validate(&self) -> Result<(), String> {
        if self.attack == Attack::SettingsLoop {
            spin_forever();
        }
        if self.bytes.is_some()
            && !matches!(self.attack, Attack::HugeResponse | Attack::HugeMutation)
        {
            return Err(format!(
                "`bytes` only applies to the huge-response and huge-mutation attacks, not to {}",
                self.attack
            ));
        }
        if self.depth.is_some() && self.attack != Attack::Recurse {
            return Err(format!(
                "`depth` only applies to the recurse attack, not to {}",
                self.attack
            ));
        }
        if self.iterations.is_some() && self.attack != Attack::Loop {
            return Err(format!(
                "`iterations` only applies to the loop attack, not to {}",
                self.attack
            ));
        }
        if self.port.is_some() && self.attack != Attack::OpenSocket {
            return Err(format!(
                "`port` only applies to the open-socket attack, not to {}",
                self.attack
            ));
        }
        Ok(())
    }
}

impl HostileSettings {
    fn bytes(&self) -> usize {
        self.bytes.unwrap_or(DEFAULT_BYTES)
    }

    fn port(&self) -> u16 {
        self.port.unwrap_or(DEFAULT_PORT)
    }
}

/// The hostile policy.
pub struct Hostile;

impl Policy for Hostile {
    type Settings = HostileSettings;

    fn metadata() -> Metadata {
        Metadata::new(
            "Test-only hostile policy: its settings pick an attack on the host's sandbox \
             (infinite loops, long sleeps, memory exhaustion, unbounded recursion, panics and \
             traps, huge responses and mutations, output spam, and attempts to reach files, \
             environment variables, arguments and sockets). For the host's sandbox tests: \
             never deploy it.",
        )
        .rule(
            Rule::new()
                .api_groups(["*"])
                .api_versions(["*"])
                .resources(["*"])
                .operations([Operation::Create, Operation::Update]),
        )
        .mutating(true)
    }

    fn validate(request: &AdmissionRequest, settings: &HostileSettings) -> Verdict {
        attack(
            settings,
            request.object.as_ref().map(RawJson::to_value).as_ref(),
        )
    }

    /// The same attack as [`validate`](Policy::validate), with the document
    /// as the object, so the attacks can be run from the wasmtime CLI.
    fn validate_raw(document: &Value, settings: &HostileSettings) -> Verdict {
        attack(settings, Some(document))
    }
}

portcullis_sdk::export_policy!(Hostile);

/// Performs the attack in `settings`; `object` is what `huge-mutation` grows.
/// Only the harmless attacks and the probes return.
pub fn attack(settings: &HostileSettings, object: Option<&Value>) -> Verdict {
    match settings.attack {
        Attack::None => accept(),
        Attack::Loop => match settings.iterations {
            Some(iterations) => {
                spin(iterations);
                accept()
            }
            None => spin_forever(),
        },
        Attack::SettingsLoop => spin_forever(),
        Attack::Sleep => {
            // One call, on purpose: a single WASI monotonic-clock subscription
            // and block, so the host must interrupt a blocked host call.
            std::thread::sleep(SLEEP);
            reject_with_code(
                format!("sleep: slept {}s and was not interrupted", SLEEP.as_secs()),
                500,
            )
        }
        Attack::Grow => grow_forever(),
        Attack::Recurse => {
            let limit = settings.depth.unwrap_or(u64::MAX);
            let result = recurse(0, limit);
            if settings.depth.is_some() {
                Verdict {
                    message: Some(format!("recurse: returned from depth {limit} ({result})")),
                    ..accept()
                }
            } else {
                reject_with_code(format!("recurse: returned ({result})"), 500)
            }
        }
        Attack::Panic => panic!("hostile policy panicked on purpose"),
        Attack::Unreachable => unreachable_instruction(),
        Attack::HugeResponse => reject("x".repeat(settings.bytes())),
        Attack::HugeMutation => huge_mutation(object, settings.bytes()),
        Attack::SpamStdout => spam(std::io::stdout(), Attack::SpamStdout),
        Attack::SpamStderr => spam(std::io::stderr(), Attack::SpamStderr),
        Attack::OpenFile => report_attempts(Attack::OpenFile, &open_files()),
        Attack::ReadEnv => {
            let variables: Vec<(String, String)> = std::env::vars_os()
                .map(|(name, value)| {
                    (
                        name.to_string_lossy().into_owned(),
                        value.to_string_lossy().into_owned(),
                    )
                })
                .collect();
            let arguments: Vec<String> = std::env::args_os()
                .map(|argument| argument.to_string_lossy().into_owned())
                .collect();
            report_environment(&variables, &arguments)
        }
        Attack::OpenSocket => report_attempts(Attack::OpenSocket, &open_sockets(settings.port())),
    }
}

/// Spins forever in wasm code the optimizer cannot remove: every iteration
/// goes through [`black_box`].
fn spin_forever() -> ! {
    let mut spins = 0u64;
    loop {
        spins = black_box(spins.wrapping_add(1));
    }
}

/// Spins `iterations` times, as [`spin_forever`] does.
fn spin(iterations: u64) {
    let mut spins = 0u64;
    while spins < iterations {
        spins = black_box(spins.wrapping_add(1));
    }
}

/// Allocates 1 MiB blocks, written to so their pages are really used, until
/// the allocator fails and Rust aborts (a wasm `unreachable` trap, after
/// `memory allocation of 1048576 bytes failed` on stderr).
fn grow_forever() -> ! {
    const MIB: usize = 1 << 20;
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    loop {
        hoard.push(vec![0xA5; MIB]);
        black_box(&mut hoard);
    }
}

/// Recurses without bound. The recursive call is not in tail position (its
/// result is used afterwards) and every frame hands a stack array to
/// [`black_box`], so the optimizer can neither turn it into a loop nor drop
/// the frames.
///
/// Each frame is small in linear memory (the 16-byte array, on Rust's 1 MiB
/// shadow stack) but several times larger on the native stack: each byte of
/// the array is read before the call and used after it, so the compiled code
/// spills 16 values there. The native stack, whose size the host limits, thus
/// runs out first (a "call stack exhausted" trap) rather than the shadow
/// stack (an out-of-bounds memory access), unless the host allows wasm
/// several MiB of native stack.
#[inline(never)]
fn recurse(depth: u64, limit: u64) -> u64 {
    let mut frame = [0u8; 16];
    frame[(depth % 16) as usize] = depth as u8;
    let frame = black_box(&mut frame);
    // Volatile reads of distinct bytes: neither merged, nor repeated, nor
    // moved past the call, so each is a distinct value kept alive across it.
    // SAFETY: a reference to an element of a live local array.
    let read = |i: usize| u64::from(unsafe { std::ptr::read_volatile(&frame[i]) });
    let live = (
        read(0),
        read(1),
        read(2),
        read(3),
        read(4),
        read(5),
        read(6),
        read(7),
        read(8),
        read(9),
        read(10),
        read(11),
        read(12),
        read(13),
        read(14),
        read(15),
    );
    if black_box(depth < limit) {
        // Mixed in one by one, not through an array: an array would live in
        // linear memory, on the shadow stack.
        macro_rules! mix {
            ($sum:expr $(, $value:expr)*) => {{
                let mut sum: u64 = $sum;
                $(sum = sum.rotate_left(3) ^ $value;)*
                sum
            }};
        }
        mix!(
            recurse(depth + 1, limit),
            live.0,
            live.1,
            live.2,
            live.3,
            live.4,
            live.5,
            live.6,
            live.7,
            live.8,
            live.9,
            live.10,
            live.11,
            live.12,
            live.13,
            live.14,
            live.15
        )
    } else {
        depth
    }
}

/// A wasm `unreachable` instruction. Natively (only ever in unit tests) a
/// panic, so that a test running it by mistake fails instead of aborting the
/// test binary.
fn unreachable_instruction() -> ! {
    #[cfg(target_arch = "wasm32")]
    {
        core::arch::wasm32::unreachable()
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        panic!("hostile policy: the `unreachable` attack (a wasm `unreachable` instruction)")
    }
}

/// Accepts, asking to store `object` (or `{}` when it is not an object) with
/// a `bytes`-long [`MUTATION_ANNOTATION`].
///
/// Builds the [`Verdict`] directly rather than with [`mutate`], which would
/// serialize a copy of the object first: one copy less of the huge string.
/// The SDK still serializes the object into the response with a buffer that
/// grows by doubling, so the policy needs about four times `bytes` of memory:
/// in a 256 MiB instance, up to about 60 MB reach the host (which should
/// refuse them as too large), while the default 100 MB runs out of memory
/// in the guest (`memory allocation of 200000110 bytes failed`).
pub fn huge_mutation(object: Option<&Value>, bytes: usize) -> Verdict {
    let mut object = match object {
        Some(Value::Object(fields)) => fields.clone(),
        _ => Map::new(),
    };
    let annotations = object_field(object_field(&mut object, "metadata"), "annotations");
    annotations.insert(
        MUTATION_ANNOTATION.to_owned(),
        Value::String("x".repeat(bytes)),
    );
    Verdict {
        mutated_object: Some(Value::Object(object)),
        ..accept()
    }
}

/// The object in `fields[name]`, replacing whatever else is there.
fn object_field<'a>(fields: &'a mut Map<String, Value>, name: &str) -> &'a mut Map<String, Value> {
    let field = fields
        .entry(name)
        .or_insert_with(|| Value::Object(Map::new()));
    if !field.is_object() {
        *field = Value::Object(Map::new());
    }
    match field {
        Value::Object(fields) => fields,
        _ => unreachable!("the field was just made an object"),
    }
}

/// Writes a line to `stream` forever, ignoring errors: a closed or failing
/// stream must not end the attack with a panic.
fn spam(mut stream: impl Write, attack: Attack) -> ! {
    loop {
        let _ = writeln!(
            stream,
            "hostile policy: {attack}: this line is written forever"
        );
    }
}

/// One attempt to reach the outside world: what was tried, and either what
/// it obtained or the error that stopped it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// What was tried, e.g. `read /etc/passwd`.
    pub what: String,
    /// What the attempt obtained (`Ok`), or why it failed (`Err`).
    pub outcome: Result<String, String>,
}

impl Attempt {
    /// Runs `attempt`, describing its success with `describe`.
    fn run<T>(
        what: impl Into<String>,
        attempt: impl FnOnce() -> std::io::Result<T>,
        describe: impl FnOnce(T) -> String,
    ) -> Attempt {
        Attempt {
            what: what.into(),
            outcome: attempt().map(describe).map_err(|error| error.to_string()),
        }
    }
}

fn open_files() -> Vec<Attempt> {
    vec![
        Attempt::run(
            "read /etc/passwd",
            || std::fs::read_to_string("/etc/passwd"),
            |text| format!("{} bytes", text.len()),
        ),
        Attempt::run(
            "read_dir /",
            || std::fs::read_dir("/"),
            |entries| format!("{} entries", entries.count()),
        ),
        Attempt::run(
            "create /tmp/hostile",
            || std::fs::File::create("/tmp/hostile"),
            |_| "created".to_owned(),
        ),
    ]
}

fn open_sockets(port: u16) -> Vec<Attempt> {
    let target = SocketAddr::from(([127, 0, 0, 1], port));
    vec![
        Attempt {
            what: format!("connect tcp {target}"),
            outcome: connect_outcome(TcpStream::connect_timeout(&target, CONNECT_TIMEOUT)),
        },
        Attempt::run(
            "bind udp 0.0.0.0:0",
            || UdpSocket::bind("0.0.0.0:0"),
            |socket| match socket.local_addr() {
                Ok(local) => format!("bound to {local}"),
                Err(_) => "bound".to_owned(),
            },
        ),
    ]
}

/// The outcome of a TCP connection attempt. A refused connection counts as
/// a success: only a real network stack answers "connection refused" (a
/// sandbox denies with "permission denied"), so the policy reached the
/// network and could talk to anything listening on it.
pub fn connect_outcome(result: std::io::Result<TcpStream>) -> Result<String, String> {
    match result {
        Ok(stream) => Ok(match stream.local_addr() {
            Ok(local) => format!("connected from {local}"),
            Err(_) => "connected".to_owned(),
        }),
        Err(error) if error.kind() == std::io::ErrorKind::ConnectionRefused => Ok(format!(
            "reached the network, the connection was refused: {error}"
        )),
        Err(error) => Err(error.to_string()),
    }
}

/// The verdict on `attack`'s `attempts`: accept, with a message listing how
/// each was denied, e.g.
/// `open-file: read /etc/passwd: denied (<error>); read_dir /: denied (<error>)`;
/// or, if any succeeded, reject with code 500 and a message starting with
/// `ESCAPED: <attack>: <what succeeded> succeeded: ` followed by the same
/// listing.
pub fn report_attempts(attack: Attack, attempts: &[Attempt]) -> Verdict {
    let listing = attempts
        .iter()
        .map(|attempt| match &attempt.outcome {
            Ok(obtained) => format!("{}: SUCCEEDED ({obtained})", attempt.what),
            Err(error) => format!("{}: denied ({error})", attempt.what),
        })
        .collect::<Vec<_>>()
        .join("; ");
    let escaped: Vec<&str> = attempts
        .iter()
        .filter(|attempt| attempt.outcome.is_ok())
        .map(|attempt| attempt.what.as_str())
        .collect();
    if escaped.is_empty() {
        accept_with_message(format!("{attack}: {listing}"))
    } else {
        reject_with_code(
            format!(
                "ESCAPED: {attack}: {} succeeded: {listing}",
                escaped.join(", ")
            ),
            500,
        )
    }
}

/// The verdict on the environment the policy could see: accept with the
/// message `read-env: no variables, no arguments` when it saw nothing, else
/// reject with code 500 and a message starting with `ESCAPED: read-env: `
/// naming the variables (names only: their values might be secrets) and the
/// arguments.
pub fn report_environment(variables: &[(String, String)], arguments: &[String]) -> Verdict {
    if variables.is_empty() && arguments.is_empty() {
        return accept_with_message(format!("{}: no variables, no arguments", Attack::ReadEnv));
    }
    let names: Vec<&str> = variables.iter().map(|(name, _)| name.as_str()).collect();
    reject_with_code(
        format!(
            "ESCAPED: {}: {} variable(s) {names:?}, {} argument(s) {arguments:?}",
            Attack::ReadEnv,
            variables.len(),
            arguments.len(),
        ),
        500,
    )
}

fn accept_with_message(message: String) -> Verdict {
    Verdict {
        message: Some(message),
        ..accept()
    }
}

#[cfg(test)]
mod tests;
