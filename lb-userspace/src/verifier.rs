//! The kernel verifier's statistics for our eBPF objects.
//!
//! aya loads a program without a verifier log and asks for one only when
//! the load fails, so an accepted program's statistics are never seen, and
//! `bpf_prog_info.verified_insns` has the instruction count only. This
//! loads every program of an object with the statistics on
//! (`BPF_LOG_STATS`) from the first attempt, with aya-obj for the ELF
//! parsing, relocations and BTF fix-ups, and reports what the verifier
//! said. The programs are closed again right away: nothing is attached.
//!
//! The verifier's processed-instruction count is a resource with a budget
//! ([`VERIFIER_BUDGET_INSNS`]): the kernel refuses past 1,000,000, and how
//! many a program needs differs by kernel build.

use std::{
    fmt, io,
    os::fd::{AsRawFd, OwnedFd},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use aya_obj::{
    EbpfSectionKind, Function, Object, Program, ProgramSection,
    btf::{Btf, BtfFeatures},
    generated::{BPF_F_XDP_HAS_FRAGS, bpf_attach_type, bpf_attr, bpf_cmd, bpf_insn, bpf_map_type, bpf_prog_type},
};

use crate::bpf_sys::{bpf, bpf_fd, zeroed_attr};

/// The programs held to the budget, each on its own: the datapath's main
/// program and the IPv6 program it tail-calls (a tail call starts a new
/// verification, with its own instructions and stack).
pub const BUDGETED_PROGRAMS: [&str; 2] = [lb_common::program_name::LB, lb_common::program_name::LB6];
/// Processed instructions each of [`BUDGETED_PROGRAMS`] may take: a fifth of the
/// kernel's 1,000,000 limit, because verifiers differ by kernel build (the
/// same object has gone over the limit on one kernel and not on another);
/// the margin is for the kernels we have not measured.
pub const VERIFIER_BUDGET_INSNS: u64 = 200_000;
/// Verification time each of [`BUDGETED_PROGRAMS`] may take (lbd's start and
/// `lbd --check` wait for it).
pub const VERIFIER_BUDGET_TIME: Duration = Duration::from_millis(500);
/// The stack a whole call chain may take: the kernel's `MAX_BPF_STACK`.
/// Linux 6.1 adds the frames of the functions on each chain (the scheduler
/// and tunnel global functions, `bpf_loop` callbacks, compiler-made
/// `memset`s) and refuses a program past it; 6.18 does not, so a chain
/// that grew past it would pass here unnoticed. [`ProgramReport`] computes
/// the deepest chain as 6.1 does, on every kernel.
pub const MAX_CALL_CHAIN_STACK: u32 = 512;

/// `BPF_LOG_STATS`: only the statistics and the error, not every instruction.
const LOG_STATS: u32 = 4;
/// Every instruction the verifier walks, and its reason for a refusal.
const LOG_VERBOSE: u32 = 1;
/// A refusal after fewer instructions than this is loaded again with the
/// verbose log (its size stays within `MAX_LOG_SIZE`).
const VERBOSE_RETRY_BELOW: u64 = 50_000;
/// Enough for the statistics and an error's last lines; the kernel answers
/// ENOSPC (and, since 6.4, the size it needed) when a log does not fit.
const FIRST_LOG_SIZE: usize = 64 * 1024;
const MAX_LOG_SIZE: usize = 16 << 20;
/// How many of the log's last lines a report keeps.
const LOG_TAIL_LINES: usize = 20;
/// Hash maps are only created so the program can refer to them: their size
/// plays no part in verification, unlike an array's (the verifier checks
/// constant indexes against it), so only hash maps are shrunk.
const HASH_MAX_ENTRIES: u32 = 1024;

/// What the verifier printed at the end of its log; `None` for what this
/// kernel does not print.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VerifierStats {
    pub processed_insns: Option<u64>,
    pub insn_limit: Option<u64>,
    pub max_states_per_insn: Option<u64>,
    pub total_states: Option<u64>,
    pub peak_states: Option<u64>,
    pub mark_read: Option<u64>,
    /// The kernel's `verification time N usec` (5.16+).
    pub verification_time: Option<Duration>,
    /// `stack depth 16+0+32`: one figure per function; empty when absent.
    pub stack_depth: Vec<u32>,
}

impl VerifierStats {
    /// Reads the statistics lines of a verifier log, any kernel's format:
    /// unknown words are skipped, missing figures stay `None`.
    pub fn parse(log: &str) -> Self {
        let mut stats = Self::default();
        let mut too_large = None;
        for line in log.lines().map(str::trim) {
            let words: Vec<&str> = line.split_whitespace().map(|w| w.trim_matches(['(', ')', ',', '.'])).collect();
            let number = |i: usize| words.get(i).and_then(|w| w.parse::<u64>().ok());
            if line.starts_with("processed ") {
                // processed N insns (limit L) max_states_per_insn A total_states B peak_states C mark_read D
                for (i, key) in words.iter().enumerate() {
                    let field = match *key {
                        "processed" => &mut stats.processed_insns,
                        "limit" => &mut stats.insn_limit,
                        "max_states_per_insn" => &mut stats.max_states_per_insn,
                        "total_states" => &mut stats.total_states,
                        "peak_states" => &mut stats.peak_states,
                        "mark_read" => &mut stats.mark_read,
                        _ => continue,
                    };
                    *field = number(i + 1).or(*field);
                }
            } else if line.starts_with("verification time ") && words.get(3) == Some(&"usec") {
                stats.verification_time = number(2).map(Duration::from_micros);
            } else if let Some(depths) = line.strip_prefix("stack depth ") {
                stats.stack_depth = depths.split('+').filter_map(|d| d.trim().parse().ok()).collect();
            } else if line.starts_with("BPF program is too large") {
                // "BPF program is too large. Processed 1000001 insn"
                too_large = words.iter().position(|w| *w == "Processed").and_then(|i| number(i + 1));
            }
        }
        stats.processed_insns = stats.processed_insns.or(too_large);
        stats
    }
}

/// Whether the kernel took the program.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Accepted,
    /// BPF_PROG_LOAD failed with this errno (E2BIG past the limit, EACCES or
    /// EINVAL for an unsafe program).
    Refused { errno: i32 },
}

/// Whether the object's BTF went to the kernel with the program (global
/// functions are verified separately only with it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BtfStatus {
    Loaded,
    /// The object has none.
    Absent,
    /// BPF_BTF_LOAD failed: the programs were loaded without BTF.
    Refused(String),
}

/// One program's verification.
#[derive(Clone, Debug)]
pub struct ProgramReport {
    pub name: String,
    pub outcome: Outcome,
    pub stats: VerifierStats,
    /// The program's instructions, called functions included (as loaded).
    pub insn_cnt: usize,
    /// The stack of its deepest call chain, as Linux 6.1 counts it (see
    /// [`deepest_call_chain`]); `None` without the verifier's frames.
    pub call_chain_stack: Option<u32>,
    /// Wall time of the BPF_PROG_LOAD that produced these statistics.
    pub load_time: Duration,
    pub btf: BtfStatus,
    /// The last lines of the verifier's log (for a refusal, why).
    pub log_tail: Vec<String>,
}

impl ProgramReport {
    /// Verification time: the kernel's figure, else (before 5.16) the load's wall time.
    pub fn time(&self) -> Duration {
        self.stats.verification_time.unwrap_or(self.load_time)
    }

    /// `Err` with the figures when the program was refused, or when it is
    /// one of [`BUDGETED_PROGRAMS`] and over [`VERIFIER_BUDGET_INSNS`] or
    /// [`VERIFIER_BUDGET_TIME`].
    pub fn check(&self) -> Result<(), String> {
        self.check_within(VERIFIER_BUDGET_TIME)
    }

    /// [`ProgramReport::check`] with another time budget (a machine that
    /// runs slower, such as an emulated one). The instruction budget never
    /// changes: it is the verifier's own measure.
    pub fn check_within(&self, time_budget: Duration) -> Result<(), String> {
        let name = &self.name;
        let budgeted = is_budgeted(name);
        let processed = self.stats.processed_insns.map_or_else(|| "an unknown number of".into(), |n| n.to_string());
        if let Outcome::Refused { errno } = self.outcome {
            let error = io::Error::from_raw_os_error(errno);
            let budget = if budgeted { format!(" (budget {VERIFIER_BUDGET_INSNS})") } else { String::new() };
            let tail = self.log_tail.join("\n    ");
            return Err(format!("{name}: refused by the verifier ({error}) after {processed} insns processed{budget}; its log ends:\n    {tail}"));
        }
        if !budgeted {
            return Ok(());
        }
        let mut over = Vec::new();
        match self.stats.processed_insns {
            Some(n) if n <= VERIFIER_BUDGET_INSNS => {}
            _ => over.push(format!("{processed} insns processed, budget {VERIFIER_BUDGET_INSNS}")),
        }
        if self.time() > time_budget {
            over.push(format!("verification took {:?}, budget {time_budget:?}", self.time()));
        }
        if let Some(chain) = self.call_chain_stack.filter(|c| *c > MAX_CALL_CHAIN_STACK) {
            over.push(format!(
                "a call chain of {chain} stack bytes, the kernel's limit {MAX_CALL_CHAIN_STACK} (Linux 6.1 refuses it)"
            ));
        }
        if over.is_empty() { Ok(()) } else { Err(format!("{name}: {}", over.join("; "))) }
    }
}

/// Whether `program` is one of [`BUDGETED_PROGRAMS`].
pub fn is_budgeted(program: &str) -> bool {
    BUDGETED_PROGRAMS.contains(&program)
}

impl fmt::Display for ProgramReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let figure = |v: Option<u64>| v.map_or_else(|| "?".to_owned(), |v| v.to_string());
        let verdict = if self.outcome == Outcome::Accepted { "accepted" } else { "REFUSED" };
        let budget = if is_budgeted(&self.name) { format!(" (budget {VERIFIER_BUDGET_INSNS})") } else { String::new() };
        let s = &self.stats;
        write!(
            f,
            "{:<21} {verdict:<9} {:>8} insns processed{budget}   {} states (peak {}, max {}/insn)   ",
            self.name,
            figure(s.processed_insns),
            figure(s.total_states),
            figure(s.peak_states),
            figure(s.max_states_per_insn),
        )?;
        match s.verification_time {
            Some(t) => write!(f, "{} verifying ({} load)", millis(t), millis(self.load_time))?,
            None => write!(f, "{} load", millis(self.load_time))?,
        }
        // The program's own length, to compare the processed count with.
        write!(f, "   {} insns long", self.insn_cnt)?;
        if let Some(frame) = s.stack_depth.iter().max() {
            write!(f, "   largest frame {frame} B")?;
        }
        if let Some(chain) = self.call_chain_stack {
            write!(f, ", deepest call chain {chain} B")?;
        }
        if let Outcome::Refused { errno } = self.outcome {
            write!(f, "   {}", io::Error::from_raw_os_error(errno))?;
        }
        if let BtfStatus::Refused(why) = &self.btf {
            write!(f, "   [without BTF: {why}]")?;
        }
        Ok(())
    }
}

/// What to tell the operator when the kernel refuses one of the
/// datapath's programs: the program, the kernel, the verifier's count and
/// last lines (lbd loads with `BPF_LOG_STATS`, so the log is short), and
/// what to do.
pub fn explain_refusal(program: &str, error: &io::Error, log: &str) -> String {
    let stats = VerifierStats::parse(log);
    let mut text = format!("the kernel (Linux {}) refused the XDP program {program}: {error}", crate::kernel::release());
    if let Some(processed) = stats.processed_insns {
        let limit = stats.insn_limit.map_or_else(String::new, |l| format!(", the kernel's limit {l}"));
        text.push_str(&format!(
            "\nthe verifier processed {processed} instructions (lb's budget {VERIFIER_BUDGET_INSNS}{limit})"
        ));
    }
    let lines: Vec<&str> = log.lines().map(str::trim_end).filter(|l| !l.is_empty()).collect();
    if !lines.is_empty() {
        text.push_str("\nthe verifier's last lines:");
        for line in &lines[lines.len().saturating_sub(LOG_TAIL_LINES)..] {
            text.push_str(&format!("\n    {line}"));
        }
    }
    text.push_str(&format!(
        "\nwhat to do: lb needs Linux {} or newer; on such a kernel this is a bug of lb's datapath: \
         report it with these lines and the output of `lbd --check --verify`",
        crate::kernel::OLDEST_SUPPORTED
    ));
    text
}

fn millis(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    if ms < 10.0 { format!("{ms:.1} ms") } else { format!("{ms:.0} ms") }
}

/// Verifies every program of an ELF object on this kernel (needs
/// CAP_BPF/root); one report per program, in the object's order. `Err`
/// only when the object cannot be prepared (parsing, maps, BTF relocations).
pub fn verify_object(object: &[u8]) -> Result<Vec<ProgramReport>> {
    let mut obj = Object::parse(object).context("parse the eBPF object")?;
    let (btf_fd, btf) = load_btf(&mut obj);
    if obj.has_btf_relocations() {
        let kernel_btf = Btf::from_sys_fs().context("read the kernel's BTF for CO-RE relocations")?;
        obj.relocate_btf(&kernel_btf).context("CO-RE relocations")?;
    }

    let mut maps = Vec::new();
    for (name, mut map) in obj.maps.drain() {
        let fd = create_map(&name, &mut map).with_context(|| format!("create map {name}"))?;
        maps.push((name, fd, map));
    }
    let text_sections = obj.functions.keys().map(|(section, _)| *section).collect();
    obj.relocate_maps(maps.iter().map(|(name, fd, map)| (name.as_str(), fd.as_raw_fd(), map)), &text_sections)
        .context("relocate map references")?;
    obj.relocate_calls(&text_sections).context("relocate calls")?;

    let mut programs: Vec<(&String, &Program)> = obj.programs.iter().collect();
    programs.sort_by_key(|(_, p)| p.function_key());
    programs
        .into_iter()
        .map(|(name, program)| {
            let function = &obj.functions[&program.function_key()];
            let mut report = verify_program(name, program, function, btf_fd.as_ref())?;
            report.btf = btf.clone();
            Ok(report)
        })
        .collect()
}

/// Fixes up the object's BTF for this kernel and loads it. This assumes a
/// modern kernel (every BTF kind); where it is refused, the programs are
/// loaded without BTF and the reports say why.
fn load_btf(obj: &mut Object) -> (Option<OwnedFd>, BtfStatus) {
    let features = BtfFeatures::new(true, true, true, true, true, true, true, true);
    let bytes = match obj.fixup_and_sanitize_btf(&features) {
        Ok(Some(btf)) => btf.to_bytes(),
        Ok(None) => return (None, BtfStatus::Absent),
        Err(e) => return (None, BtfStatus::Refused(format!("fix-up failed: {e}"))),
    };
    let mut attr = zeroed_attr();
    // SAFETY: the BTF_LOAD member of a zeroed union; `bytes` outlives the call.
    let u = unsafe { &mut attr.__bindgen_anon_7 };
    u.btf = bytes.as_ptr() as u64;
    u.btf_size = bytes.len() as u32;
    match bpf_fd(bpf_cmd::BPF_BTF_LOAD, &mut attr) {
        Ok(fd) => (Some(fd), BtfStatus::Loaded),
        Err(e) => (None, BtfStatus::Refused(format!("BPF_BTF_LOAD: {e}"))),
    }
}

/// Creates a map from its definition in the object, with the initial
/// contents of a global-data section (.data, .rodata, .bss).
fn create_map(name: &str, map: &mut aya_obj::Map) -> Result<OwnedFd> {
    let is = |t: bpf_map_type| map.map_type() == t as u32;
    use bpf_map_type::*;
    if is(BPF_MAP_TYPE_ARRAY_OF_MAPS) || is(BPF_MAP_TYPE_HASH_OF_MAPS) {
        bail!("maps of maps are not supported here");
    }
    if is(BPF_MAP_TYPE_HASH) || is(BPF_MAP_TYPE_LRU_HASH) || is(BPF_MAP_TYPE_PERCPU_HASH) || is(BPF_MAP_TYPE_LRU_PERCPU_HASH) {
        map.set_max_entries(map.max_entries().min(HASH_MAX_ENTRIES));
    }
    let mut attr = zeroed_attr();
    // SAFETY: the MAP_CREATE member of a zeroed union.
    let u = unsafe { &mut attr.__bindgen_anon_1 };
    u.map_type = map.map_type();
    u.key_size = map.key_size();
    u.value_size = map.value_size();
    u.max_entries = map.max_entries();
    u.map_flags = map.map_flags();
    u.map_extra = map.map_extra();
    u.map_name = kernel_name(name);
    let fd = bpf_fd(bpf_cmd::BPF_MAP_CREATE, &mut attr)?;

    let kind = map.section_kind();
    if matches!(kind, EbpfSectionKind::Data | EbpfSectionKind::Rodata | EbpfSectionKind::Bss) && !map.data().is_empty() {
        let key = 0u32;
        let mut attr = zeroed_attr();
        // SAFETY: the MAP_UPDATE_ELEM member of a zeroed union; key and value outlive the call.
        let u = unsafe { &mut attr.__bindgen_anon_2 };
        u.map_fd = fd.as_raw_fd() as u32;
        u.key = &raw const key as u64;
        u.__bindgen_anon_1.value = map.data().as_ptr() as u64;
        bpf(bpf_cmd::BPF_MAP_UPDATE_ELEM, &mut attr).context("write the section's contents")?;
    }
    if kind == EbpfSectionKind::Rodata {
        // The verifier takes .rodata's values as constants only from a frozen map.
        let mut attr = zeroed_attr();
        attr.__bindgen_anon_2.map_fd = fd.as_raw_fd() as u32;
        bpf(bpf_cmd::BPF_MAP_FREEZE, &mut attr).context("freeze .rodata")?;
    }
    Ok(fd)
}

/// Loads one program with the statistics log; a second attempt with a
/// bigger buffer only when the log did not fit (ENOSPC).
fn verify_program(name: &str, program: &Program, function: &Function, btf_fd: Option<&OwnedFd>) -> Result<ProgramReport> {
    let ProgramSection::Xdp { frags, attach_type } = &program.section else {
        bail!("program {name}: {:?} is not an XDP section; only XDP programs are verified here", program.section);
    };
    let (func_info, line_info) = (function.func_info.func_info_bytes(), function.line_info.line_info_bytes());
    let mut attr = zeroed_attr();
    // SAFETY: the PROG_LOAD member of a zeroed union; every buffer it points
    // to (instructions, license, BTF info, log) outlives the calls below.
    let u = unsafe { &mut attr.__bindgen_anon_3 };
    u.prog_type = bpf_prog_type::BPF_PROG_TYPE_XDP as u32;
    u.expected_attach_type = bpf_attach_type::from(*attach_type) as u32;
    u.prog_flags = if *frags { BPF_F_XDP_HAS_FRAGS } else { 0 };
    u.insns = function.instructions.as_ptr() as u64;
    u.insn_cnt = function.instructions.len() as u32;
    u.license = program.license.as_ptr() as u64;
    u.kern_version = program.kernel_version.unwrap_or(0);
    u.prog_name = kernel_name(name);
    if let Some(btf_fd) = btf_fd {
        // func_info and line_info need the BTF they refer to.
        u.prog_btf_fd = btf_fd.as_raw_fd() as u32;
        if function.func_info_rec_size > 0 {
            u.func_info = func_info.as_ptr() as u64;
            u.func_info_cnt = function.func_info.len() as u32;
            u.func_info_rec_size = function.func_info_rec_size as u32;
        }
        if function.line_info_rec_size > 0 {
            u.line_info = line_info.as_ptr() as u64;
            u.line_info_cnt = function.line_info.len() as u32;
            u.line_info_rec_size = function.line_info_rec_size as u32;
        }
    }

    let mut log = vec![0u8; FIRST_LOG_SIZE];
    let (mut result, mut load_time) = load_with_log(&mut attr, &mut log, LOG_STATS);
    if matches!(&result, Err(e) if e.raw_os_error() == Some(libc::ENOSPC)) {
        // SAFETY: the PROG_LOAD member, as above; log_true_size is 0 before 6.4.
        let needed = unsafe { attr.__bindgen_anon_3.log_true_size } as usize;
        log = vec![0u8; needed.clamp(16 * FIRST_LOG_SIZE, MAX_LOG_SIZE)];
        (result, load_time) = load_with_log(&mut attr, &mut log, LOG_STATS);
    }
    let text = log_text(&log);
    let stats = VerifierStats::parse(&text);
    let mut tail_text = text.clone();
    if result.is_err() && stats.processed_insns.is_some_and(|n| n < VERBOSE_RETRY_BELOW) {
        // The statistics say how far it got, not why it stopped: a refusal
        // early on is loaded again with the instruction log, whose last
        // lines name the instruction and the rule (older kernels print
        // the reason only then).
        let mut verbose = vec![0u8; MAX_LOG_SIZE];
        let _ = load_with_log(&mut attr, &mut verbose, LOG_STATS | LOG_VERBOSE);
        tail_text = log_text(&verbose);
    }
    let lines: Vec<&str> = tail_text.lines().filter(|l| !l.trim().is_empty()).collect();
    Ok(ProgramReport {
        name: name.to_owned(),
        // Dropping the fd unloads the program again.
        outcome: match result {
            Ok(_fd) => Outcome::Accepted,
            Err(e) => Outcome::Refused { errno: e.raw_os_error().unwrap_or(0) },
        },
        call_chain_stack: deepest_call_chain(&function_refs(&function.instructions), &stats.stack_depth),
        stats,
        insn_cnt: function.instructions.len(),
        load_time,
        btf: BtfStatus::Absent,
        log_tail: lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].iter().map(|l| l.to_string()).collect(),
    })
}

/// How an instruction refers to a function of the program.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FunctionRef {
    /// Calls the function at this instruction (`BPF_PSEUDO_CALL`).
    Call(usize),
    /// Hands it on as a callback, to `bpf_loop` (`BPF_PSEUDO_FUNC`): a
    /// function of its own, on no chain of the caller's in 6.1 (counted,
    /// lb_xdp's scheduler scans would take its chain to 544 bytes, and 6.1
    /// takes it).
    Callback(usize),
}

impl FunctionRef {
    fn target(self) -> usize {
        match self {
            Self::Call(t) | Self::Callback(t) => t,
        }
    }
}

/// Each instruction's reference to a function of the program, if any.
fn function_refs(insns: &[bpf_insn]) -> Vec<Option<FunctionRef>> {
    const BPF_CALL_CODE: u8 = 0x85; // BPF_JMP | BPF_CALL
    const BPF_LD_IMM64_CODE: u8 = 0x18; // BPF_LD | BPF_IMM | BPF_DW
    const BPF_PSEUDO_CALL: u8 = 1;
    const BPF_PSEUDO_FUNC: u8 = 4;
    insns
        .iter()
        .enumerate()
        .map(|(i, insn)| {
            let target = (i as i64 + insn.imm as i64 + 1) as usize;
            match (insn.code, insn.src_reg()) {
                (BPF_CALL_CODE, BPF_PSEUDO_CALL) => Some(FunctionRef::Call(target)),
                (BPF_LD_IMM64_CODE, BPF_PSEUDO_FUNC) => Some(FunctionRef::Callback(target)),
                _ => None,
            }
        })
        .collect()
}

/// The stack of the deepest call chain from the program's entry, as Linux
/// 6.1's check_max_stack_depth adds it: each function's frame (`depths`,
/// the verifier's figures in the order the functions start, the entry
/// first) rounded up to 32 bytes, at least 32. `refs` is [`function_refs`]
/// of the instructions. `None` when the figures do not fit the functions.
fn deepest_call_chain(refs: &[Option<FunctionRef>], depths: &[u32]) -> Option<u32> {
    let mut starts: Vec<usize> = std::iter::once(0).chain(refs.iter().flatten().map(|r| r.target())).collect();
    starts.sort_unstable();
    starts.dedup();
    if starts.len() != depths.len() || starts.last().is_some_and(|&s| s >= refs.len()) {
        return None;
    }
    // The deepest chain from each function down: BPF has no recursion and
    // chains are at most 8 frames (MAX_CALL_FRAMES), so a memoised walk.
    struct Walk<'a> {
        refs: &'a [Option<FunctionRef>],
        starts: &'a [usize],
        depths: &'a [u32],
        memo: Vec<Option<u32>>,
    }
    impl Walk<'_> {
        fn below(&mut self, f: usize, hops: u32) -> u32 {
            if let Some(d) = self.memo[f] {
                return d;
            }
            let end = self.starts.get(f + 1).copied().unwrap_or(self.refs.len());
            let mut deepest = 0;
            for i in self.starts[f]..end {
                if let (Some(FunctionRef::Call(target)), true) = (self.refs[i], hops < 8)
                    && let Ok(callee) = self.starts.binary_search(&target)
                {
                    deepest = deepest.max(self.below(callee, hops + 1));
                }
            }
            let d = self.depths[f].max(1).div_ceil(32) * 32 + deepest;
            self.memo[f] = Some(d);
            d
        }
    }
    let mut walk = Walk { refs, starts: &starts, depths, memo: vec![None; depths.len()] };
    Some(walk.below(0, 0))
}

/// The log as text, up to its terminating NUL.
fn log_text(log: &[u8]) -> String {
    let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
    String::from_utf8_lossy(&log[..end]).into_owned()
}

fn load_with_log(attr: &mut bpf_attr, log: &mut [u8], level: u32) -> (io::Result<OwnedFd>, Duration) {
    log[0] = 0;
    // SAFETY: the PROG_LOAD member of the union verify_program filled.
    let u = unsafe { &mut attr.__bindgen_anon_3 };
    u.log_level = level;
    u.log_buf = log.as_mut_ptr() as u64;
    u.log_size = log.len() as u32;
    let start = Instant::now();
    // The kernel gives up with EAGAIN when a signal arrives mid-verification.
    let mut result = bpf_fd(bpf_cmd::BPF_PROG_LOAD, attr);
    for _ in 0..4 {
        if !matches!(&result, Err(e) if e.raw_os_error() == Some(libc::EAGAIN)) {
            break;
        }
        result = bpf_fd(bpf_cmd::BPF_PROG_LOAD, attr);
    }
    (result, start.elapsed())
}

/// A program or map name as the kernel takes it: 15 bytes of [A-Za-z0-9_.].
fn kernel_name(name: &str) -> [libc::c_char; 16] {
    let mut out = [0; 16];
    let clean = name.bytes().filter(|b| b.is_ascii_alphanumeric() || *b == b'_' || *b == b'.');
    for (slot, b) in out.iter_mut().zip(clean.take(15)) {
        *slot = b as libc::c_char;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifier_stats_of_an_accepted_program() {
        let log = "verification time 112233 usec\nstack depth 96+0+40\n\
                   processed 48211 insns (limit 1000000) max_states_per_insn 12 total_states 3641 peak_states 2100 mark_read 310\n";
        let stats = VerifierStats::parse(log);
        assert_eq!(
            stats,
            VerifierStats {
                processed_insns: Some(48211),
                insn_limit: Some(1_000_000),
                max_states_per_insn: Some(12),
                total_states: Some(3641),
                peak_states: Some(2100),
                mark_read: Some(310),
                verification_time: Some(Duration::from_micros(112_233)),
                stack_depth: vec![96, 0, 40],
            }
        );
    }

    #[test]
    fn verifier_stats_of_a_refused_program() {
        let log = "BPF program is too large. Processed 1000001 insn\n\
                   processed 1000001 insns (limit 1000000) max_states_per_insn 84 total_states 76472 peak_states 74236 mark_read 0\n";
        let stats = VerifierStats::parse(log);
        assert_eq!(stats.processed_insns, Some(1_000_001));
        assert_eq!(stats.insn_limit, Some(1_000_000));
        assert_eq!((stats.max_states_per_insn, stats.total_states, stats.peak_states), (Some(84), Some(76472), Some(74236)));
        assert_eq!(stats.mark_read, Some(0));
        assert_eq!(stats.verification_time, None);
    }

    #[test]
    fn verifier_stats_missing_fields_are_none() {
        // Newer kernels dropped mark_read; older ones lack the time line; a
        // log may end with only the too-large line.
        let stats = VerifierStats::parse("processed 17 insns (limit 1000000) max_states_per_insn 0 total_states 1 peak_states 1\n");
        assert_eq!((stats.processed_insns, stats.peak_states, stats.mark_read), (Some(17), Some(1), None));
        assert_eq!((stats.verification_time, stats.stack_depth.len()), (None, 0));
        let stats = VerifierStats::parse("R1 invalid mem access 'scalar'\nBPF program is too large. Processed 1000001 insn\n");
        assert_eq!((stats.processed_insns, stats.total_states), (Some(1_000_001), None));
        assert_eq!(VerifierStats::parse(""), VerifierStats::default());
    }

    fn report(name: &str, processed: u64, time_ms: u64, outcome: Outcome) -> ProgramReport {
        ProgramReport {
            name: name.into(),
            outcome,
            stats: VerifierStats {
                processed_insns: Some(processed),
                verification_time: Some(Duration::from_millis(time_ms)),
                ..VerifierStats::default()
            },
            insn_cnt: 100,
            call_chain_stack: None,
            load_time: Duration::from_millis(time_ms + 1),
            btf: BtfStatus::Loaded,
            log_tail: vec!["BPF program is too large. Processed 1000001 insn".into()],
        }
    }

    #[test]
    fn verifier_budget_check() {
        assert_eq!(report(BUDGETED_PROGRAMS[0], VERIFIER_BUDGET_INSNS, 500, Outcome::Accepted).check(), Ok(()));
        let over = report(BUDGETED_PROGRAMS[0], VERIFIER_BUDGET_INSNS + 1, 501, Outcome::Accepted).check().unwrap_err();
        assert!(over.starts_with("lb_xdp: 200001 insns processed, budget 200000;"), "{over}");
        assert!(over.ends_with("verification took 501ms, budget 500ms"), "{over}");
        // Other programs have no budget, only acceptance.
        assert_eq!(report("lb_clock", 900_000, 900, Outcome::Accepted).check(), Ok(()));
        let refused = report("lb_clock", 1_000_001, 900, Outcome::Refused { errno: libc::E2BIG }).check().unwrap_err();
        assert!(refused.starts_with("lb_clock: refused by the verifier (Argument list too long"), "{refused}");
        assert!(refused.contains("after 1000001 insns processed; its log ends:\n    BPF program is too large"), "{refused}");
        let mut deep = report(BUDGETED_PROGRAMS[0], 1000, 10, Outcome::Accepted);
        deep.call_chain_stack = Some(MAX_CALL_CHAIN_STACK);
        assert_eq!(deep.check(), Ok(()));
        deep.call_chain_stack = Some(MAX_CALL_CHAIN_STACK + 32);
        assert_eq!(
            deep.check().unwrap_err(),
            "lb_xdp: a call chain of 544 stack bytes, the kernel's limit 512 (Linux 6.1 refuses it)"
        );
        let line = report(BUDGETED_PROGRAMS[0], 48211, 112, Outcome::Accepted).to_string();
        assert!(line.starts_with("lb_xdp                accepted     48211 insns processed (budget 200000)"), "{line}");
    }

    /// The chain 6.1 refused: the entry (336 bytes, 352 rounded) calling
    /// the tunnel (136, 160) calling a memset (8, 32): 544.
    #[test]
    fn the_deepest_call_chain_is_added_as_6_1_adds_it() {
        // 0: entry, calls 10, hands 20 on as a callback; 10: tunnel, calls
        // 30; 20: callback; 30: memset.
        let mut refs = vec![None; 40];
        refs[3] = Some(FunctionRef::Call(10));
        refs[5] = Some(FunctionRef::Callback(20));
        refs[12] = Some(FunctionRef::Call(30));
        assert_eq!(deepest_call_chain(&refs, &[336, 136, 40, 8]), Some(544));
        assert_eq!(deepest_call_chain(&refs, &[336, 0, 400, 0]), Some(352 + 32 + 32), "a callback is no link");
        refs[5] = Some(FunctionRef::Call(20));
        assert_eq!(deepest_call_chain(&refs, &[336, 0, 200, 0]), Some(352 + 224));
        // Figures that do not fit the functions found.
        assert_eq!(deepest_call_chain(&refs, &[336, 136]), None);
    }
}
