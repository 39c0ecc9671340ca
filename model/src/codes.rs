//! The registry of diagnostic codes: every code Chimera emits, with what it means.
//!
//! A code stands for one kind of failure. docs/diagnostics.md documents exactly these codes
//! with exactly these meanings, and no code is written as a string anywhere else (both checked
//! by `model/tests/codes.rs`).

use crate::diagnostic::Code;

macro_rules! registry {
    ($( $name:ident = $code:literal, $meaning:literal; )*) => {
        $(
            #[doc = $meaning]
            pub const $name: Code = Code($code);
        )*
        /// Every code with its meaning, in code order.
        pub const ALL: &[(Code, &str)] = &[$(($name, $meaning)),*];
    };
}

registry! {
    // Evaluation (Nickel).
    NICKEL_PARSE = "E0001", "Nickel parse error";
    NICKEL_TYPE = "E0002", "Nickel type or import-resolution error (e.g. syntax inside an imported file)";
    CONTRACT_BROKEN = "E0003", "a contract is broken, or a required field (e.g. `cidr`, `stack`) has no value; this includes a misspelt or out-of-range `providers` setting";
    NICKEL_EVAL = "E0004", "Nickel evaluation error (dynamic type error, infinite recursion, `std.fail_with`)";
    IMPORT_UNRESOLVED = "E0005", "an import cannot be resolved";
    NOT_EXPORTABLE = "E0006", "a value cannot be exported (a function, or nesting deeper than 64 levels)";
    EVAL_TIMEOUT = "E0007", "evaluation exceeded the time limit (`--eval-timeout`)";
    EVAL_MEMORY = "E0008", "evaluation exceeded the memory limit (`--eval-memory-mib`)";
    STACK_UNREADABLE = "E0009", "the stack file cannot be read (missing, unreadable, or a path that is not UTF-8)";
    INTERNAL = "E0010", "internal error (a bug: please report it with the input)";
    EVALUATOR_UNAVAILABLE = "E0011", "the evaluator cannot start (the system refused a thread)";
    SOURCE_NOT_UTF8 = "E0012", "a source file is not valid UTF-8 (the first invalid byte's offset, line and column named)";
    // Lowering and the graph.
    NOT_A_STACK = "E0100", "the value is not a stack, or a resource is not a record";
    UNKNOWN_KIND = "E0101", "unknown resource kind, or a record without `kind`";
    UNKNOWN_FIELD = "E0102", "unknown field (with a \"did you mean\" suggestion)";
    INVALID_FIELD = "E0103", "missing required field, wrong type, unknown enum value, number out of range";
    DUPLICATE_ADDRESS = "E0104", "duplicate resource address";
    MISSING_RESOURCE = "E0105", "reference to a resource that is not in the stack";
    CYCLE = "E0106", "dependency cycle (every address on the cycle is named)";
    INVALID_CIDR = "E0107", "invalid CIDR block, or host bits set";
    SUBNET_PLACEMENT = "E0108", "subnet outside its network, or overlapping subnets";
    UNKNOWN_REGION = "E0109", "region unknown, or not offered by the provider";
    UNKNOWN_SIZE = "E0110", "size / volume type unknown or not offered by the provider; no instance type fits";
    UNKNOWN_IMAGE = "E0111", "image family not offered";
    INVALID_NAME = "E0112", "name invalid (generally, or for the provider)";
    TOO_LARGE = "E0113", "value too large (strings over 64 KiB, tags over 256 characters)";
    TOO_DEEP = "E0114", "`resources` arrays nested more than 16 levels";
    BAD_REFERENCE = "E0115", "reference to the wrong kind, to an unknown output, or malformed";
    NO_PLACEMENT = "E0116", "`'cheapest` found no cloud offering everything a group needs";
    CROSS_PROVIDER = "E0117", "a resource attaches to a resource on another provider";
    MODULES_INVALID = "E0118", "`modules` is not a list of files";
    PROVIDER_LIMIT = "E0119", "a provider's limit is broken (block size, user data, volume size, tag or rule count), found at plan time before anything is created";
    MOVED_INVALID = "E0120", "a `moved` entry is malformed: an address that is not `KIND.NAME` of a known kind, or a resource moved to itself";
    MOVED_TARGET_MISSING = "E0121", "a `moved` entry's `to` is not a resource of the stack";
    MOVED_FROM_DECLARED = "E0122", "a `moved` entry's `from` is still a resource of the stack";
    MOVED_DUPLICATE = "E0123", "two `moved` entries move from the same address, or to the same address";
    MOVED_CYCLE = "E0124", "`moved` entries form a cycle (every address on it is named)";
    MOVED_KIND_CHANGE = "E0125", "a `moved` entry changes a resource's kind (e.g. instance to volume)";
    MOVED_CHAIN = "E0126", "warning: `moved` entries chain (a to b, b to c); the first address moves to the last, as in Terraform";
    // Planning.
    PREVENT_DESTROY = "E0200", "the plan would delete or replace a resource with `prevent_destroy`";
    UNRESTORABLE = "E0201", "a rollback needs a sensitive value that state only keeps a digest of";
    MOVE_CONFLICT = "E0202", "a `moved` entry cannot be planned: state holds both its `from` and its `to`";
    // State, plans and the workflow.
    STATE = "E0300", "state problem: not a state database, not writable, damaged, unreachable, lineage mismatch";
    LOCKED = "E0301", "the stack is locked by another run (holder, host, pid, operation and start named)";
    STALE_PLAN = "E0302", "the plan is stale: state moved on since it was made";
    INVALID_PLAN_FILE = "E0303", "invalid plan file: truncated, not JSON, another version, or edited (integrity check)";
    NO_PROVIDER = "E0304", "the provider is not available in this build";
    UNRESOLVED = "E0305", "an interrupted apply cannot be resolved automatically (what to check is said)";
    INTERRUPTED = "E0306", "warning: an earlier apply was interrupted; `apply` will resolve it first";
    NOT_CONFIRMED = "E0307", "apply not confirmed (no terminal and no `-y`)";
    NOT_IN_STATE = "E0308", "no such resource in state";
    NOTHING_TO_MIGRATE = "E0309", "`state migrate`: nothing to migrate (no such state, stack or stacks in the source)";
    NO_TEST_CASES = "E0310", "`chimera test`: no test cases (`tests/NAME.ncl`)";
    GIT = "E0311", "`chimera preview`: git missing or failing, or an unknown ref";
    INIT_EXISTS = "E0312", "`chimera init`: the directory already has Chimera files (nothing written)";
    PROVIDER_SETTING = "E0313", "a provider setting is invalid where the stack's contract cannot see it (a `CHIMERA_LOCAL_*` variable, or a plan file)";
    LOCAL_CLOUD = "E0314", "the local cloud's file cannot be opened, read or changed";
    LOCK_LOST = "E0315", "the stack's lock was lost during a run (its database session ended, or it was force-unlocked)";
    PLAN_NOT_SAVED = "E0316", "the plan file cannot be written";
    NO_GENERATION = "E0317", "no such generation in the stack's history";
    MIGRATE_MISMATCH = "E0318", "`state migrate`: the copy reads back differently from the source (the source is unchanged)";
    SNAPSHOT_WRITE = "E0319", "`chimera test`: a snapshot cannot be written";
    BASE_BROKEN = "E0320", "`chimera preview`: a version of the stack does not compile";
    INIT_NAME = "E0321", "`chimera init`: the stack name is invalid";
    INIT_WRITE = "E0322", "`chimera init`: a directory or file cannot be written";
    ALREADY_IN_STATE = "E0323", "`import`: the address is already in state";
    BAD_FIXTURE = "E0324", "`chimera test`: a state fixture cannot be read, is not UTF-8 or JSON, holds something that is not a state row, or holds one address twice (its byte, line and column named)";
    // Provider calls: an apply's failed step, a read during refresh or import, by failure class.
    CALL_REFUSED = "E0400", "the cloud refused the call (a permanent error: invalid request, unsupported value, permission)";
    CALL_THROTTLED = "E0401", "the cloud kept throttling the call after every retry";
    CALL_TRANSIENT = "E0402", "the call kept failing transiently (eventual consistency, a timeout, a server error) after every retry";
    CALL_CONFLICT = "E0403", "the call conflicts with the resource's current state (in use, a dependency, a state transition)";
    CALL_NOT_FOUND = "E0404", "the resource the call needs does not exist in the cloud";
    CALL_QUOTA = "E0405", "a quota or capacity limit stopped the call";
    STEP_SKIPPED = "E0406", "warning: a step was not attempted because a step it depends on failed";
    NO_SUCH_CLOUD_RESOURCE = "E0407", "`import`: the provider has no resource with that id";
    // Policy.
    POLICY_SYNTAX = "E0500", "a policy file does not parse (Rego or Nickel syntax)";
    POLICY_PACKAGE = "E0501", "a Rego policy's package is not `chimera` or `chimera.NAME`";
    NOT_A_POLICY = "E0502", "a Nickel policy is not a policy: not a record of `deny` / `warn` functions, nor a function";
    POLICY_EVAL = "E0503", "a policy failed while evaluating (a Rego runtime error, a Nickel error or broken contract)";
    POLICY_TIMEOUT = "E0504", "a policy exceeded the time limit";
    POLICY_MEMORY = "E0505", "a policy exceeded the memory limit";
    POLICY_UNREADABLE = "E0506", "the policy directory or a policy file cannot be read";
    POLICY_RESULT = "E0507", "a policy's result has the wrong shape (a finding that is not a message or a record with one)";
    POLICY_TEST_INVALID = "E0508", "a Nickel policy test file is not a record of cases with `input`, `deny` and `warn`";
    POLICY_RECURSION = "E0509", "a Rego function calls itself, directly or through other functions (Rego forbids recursion)";
    POLICY_DENIED = "E0510", "a policy denied the plan: apply refused, nothing was changed (the policy file and line, rule, address and message named)";
    POLICY_WARNED = "E0511", "warning: a policy warned about the plan (shown, does not block)";
    // The daemon.
    SERVE = "E0600", "`chimera serve` cannot start or stopped (the address cannot be bound, or a token is missing for a non-loopback address)";
    RECONCILE_SETTING = "E0601", "a stack's `reconcile` settings name an unknown heal mode, kind or address";
    AGENT = "E0700", "an agent could not propose: the proposer, the forge, git or the agents' memory failed (the message says which)";
    // Encryption at rest (plan files, cache entries, sensitive values in state).
    KEY_INVALID = "E0800", "an encryption key setting is invalid (an unreadable key file, a key that is not 32 bytes of base64, an empty passphrase, two sources for one key)";
    KEY_MISSING = "E0801", "encrypted data needs a key and none is configured, or a sensitive value would be saved to a plan file without a key";
    KEY_UNKNOWN = "E0802", "encrypted data was sealed with a key that is neither the key nor the fallback key configured (its key id named)";
    SEALED_TAMPERED = "E0803", "encrypted data failed authentication or is not a well-formed envelope (tampered, truncated or damaged)";
}

/// What `code` means, if it is in the registry.
pub fn meaning(code: Code) -> Option<&'static str> {
    ALL.iter().find(|(c, _)| *c == code).map(|(_, m)| *m)
}
