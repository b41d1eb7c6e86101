#include "clients/cpp/chat/options.h"

#include <absl/flags/flag.h>
#include <absl/flags/parse.h>
#include <absl/flags/usage.h>
#include <absl/flags/usage_config.h>
#include <absl/strings/ascii.h>
#include <absl/strings/match.h>

#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <optional>

#include "clients/cpp/chat/repeated_flags.h"

ABSL_FLAG(std::string, server, "", "gistmem server address, HOST:PORT (required)");
ABSL_FLAG(bool, new, false, "create a session (prints its id); with --session ID, under that id");
ABSL_FLAG(std::string, session, "", "continue the session with this id");
ABSL_FLAG(std::string, system, "", "system prompt of the session --new creates");
ABSL_FLAG(std::string, policy, "", "memory policy for --new: full, window, pool or gist");
ABSL_FLAG(int32_t, ratio, 0, "--new: raw tokens per gist or pooled entry; 0 = model default");
ABSL_FLAG(int32_t, window, 0, "--new: raw tokens kept verbatim; 0 = model default");
ABSL_FLAG(int32_t, sink_tokens, 0, "--new: first tokens kept for good; 0 = model default");
// Declared so that --help lists them; their values come from ExtractRepeatedFlags, in order.
ABSL_FLAG(std::string, message, "", "a user turn; repeat for several turns (scripted mode)");
ABSL_FLAG(std::string, append, "",
          "context to add without generating (a tool result...); repeatable, runs in order");
ABSL_FLAG(std::string, append_role, "tool", "role of --append messages: tool, user, system...");
ABSL_FLAG(std::optional<int32_t>, max_tokens, std::nullopt, "most tokens to generate per turn");
ABSL_FLAG(std::optional<double>, temperature, std::nullopt, "sampling temperature; 0 = greedy");
ABSL_FLAG(std::optional<int32_t>, top_k, std::nullopt, "sample among the k likeliest; 0 = off");
ABSL_FLAG(std::optional<double>, top_p, std::nullopt, "nucleus sampling mass in (0, 1]");
ABSL_FLAG(std::optional<double>, repetition_penalty, std::nullopt, "> 0; 1 = off");
ABSL_FLAG(std::optional<uint64_t>, seed, std::nullopt, "random seed for sampling");
ABSL_FLAG(bool, json, false, "scripted: print one JSON object per line (see --help)");
ABSL_FLAG(bool, stats, false, "print the session's SessionStats as JSON (after any turns)");
ABSL_FLAG(bool, health, false, "grpc.health.v1 Check: exit 0 when SERVING, 1 otherwise");
ABSL_FLAG(std::string, health_service, "", "service name for --health; empty = the server");
ABSL_FLAG(std::string, api_key, "",
          "API key for a server that needs one (default: $GISTMEM_API_KEY)");
ABSL_FLAG(std::string, tls_ca, "",
          "PEM file of the CA of the server's TLS certificate; empty = plaintext");
ABSL_FLAG(int64_t, deadline_ms, 0, "deadline of each RPC in ms (a Chat stream is one); 0 = none");

namespace gistmem::chat {
namespace {

constexpr char kUsage[] = R"(chat with a gistmem server.

Interactive: one turn per line of stdin; the reply streams as it arrives.
  gistmem-chat --server HOST:PORT [--new [--system TEXT] | --session ID]
  Lines starting with '/' are commands: /new, /session ID, /stats, /help, /quit
  (a line starting with '//' sends its text from the second '/'). Ctrl-C cancels the
  running turn; at the prompt it quits. Without --session a new session is created.

Scripted (tests, tools): --append and --message run in command-line order.
  gistmem-chat --server HOST:PORT --new [--system TEXT] --message TEXT [--message TEXT] --json
  gistmem-chat --server HOST:PORT --session ID [--append TEXT] --message TEXT [--json]
  gistmem-chat --server HOST:PORT --session ID --stats
  gistmem-chat --server HOST:PORT --health
  Text output: the reply on stdout; "session: ID" on stderr when one is created.
  --json: one object per line: per turn {"session_id", "turn_index", "reply",
  "finish_reason" (stop|length|cancelled|unspecified), "usage": {"prompt_tokens",
  "completion_tokens", "cached_tokens", "stream_tokens"}}; per append {"session_id",
  "appended": true, "usage"}; with --new and nothing else {"session_id"}; --stats prints
  the SessionStats fields.

Exit codes: 0 success; 1 --health answered but not SERVING, or absl rejected a flag (unknown,
  malformed, missing its value) or printed --help; 2 flags that do not fit together;
  10 + gRPC status code on an RPC error, printed as "CODE_NAME: message" on stderr:
  11 CANCELLED, 12 UNKNOWN, 13 INVALID_ARGUMENT, 14 DEADLINE_EXCEEDED, 15 NOT_FOUND,
  16 ALREADY_EXISTS, 17 PERMISSION_DENIED, 18 RESOURCE_EXHAUSTED, 19 FAILED_PRECONDITION,
  20 ABORTED, 21 OUT_OF_RANGE, 22 UNIMPLEMENTED, 23 INTERNAL, 24 UNAVAILABLE, 25 DATA_LOSS,
  26 UNAUTHENTICATED.)";

void ConfigureHelp() {
  absl::SetProgramUsageMessage(kUsage);
  absl::FlagsUsageConfig config;
  // --help lists this program's flags, not those of every library linked in.
  config.contains_help_flags = [](absl::string_view file) {
    return absl::StrContains(file, "clients/cpp/chat/");
  };
  absl::SetFlagsUsageConfig(config);
}

v1::MemoryPolicy PolicyFromFlags() {
  v1::MemoryPolicy policy;
  if (const std::string kind = absl::GetFlag(FLAGS_policy); !kind.empty()) {
    v1::MemoryPolicy::Kind parsed;
    if (!v1::MemoryPolicy::Kind_Parse(absl::AsciiStrToUpper(kind), &parsed) ||
        parsed == v1::MemoryPolicy::KIND_UNSPECIFIED) {
      throw UsageError("--policy must be full, window, pool or gist, not '" + kind + "'");
    }
    policy.set_kind(parsed);
  }
  policy.set_ratio(absl::GetFlag(FLAGS_ratio));
  policy.set_window(absl::GetFlag(FLAGS_window));
  policy.set_sink_tokens(absl::GetFlag(FLAGS_sink_tokens));
  return policy;
}

bool PolicyFlagsGiven() {
  return !absl::GetFlag(FLAGS_policy).empty() || absl::GetFlag(FLAGS_ratio) != 0 ||
         absl::GetFlag(FLAGS_window) != 0 || absl::GetFlag(FLAGS_sink_tokens) != 0;
}

// Only the flags given are set, so the server keeps the session's defaults for the rest.
v1::SamplingParams SamplingFromFlags() {
  v1::SamplingParams sampling;
  if (auto v = absl::GetFlag(FLAGS_max_tokens)) sampling.set_max_tokens(*v);
  if (auto v = absl::GetFlag(FLAGS_temperature)) sampling.set_temperature(static_cast<float>(*v));
  if (auto v = absl::GetFlag(FLAGS_top_k)) sampling.set_top_k(*v);
  if (auto v = absl::GetFlag(FLAGS_top_p)) sampling.set_top_p(static_cast<float>(*v));
  if (auto v = absl::GetFlag(FLAGS_repetition_penalty)) {
    sampling.set_repetition_penalty(static_cast<float>(*v));
  }
  if (auto v = absl::GetFlag(FLAGS_seed)) sampling.set_seed(*v);
  return sampling;
}

std::vector<Action> ActionsFrom(const std::vector<RepeatedFlag>& repeated) {
  std::vector<Action> actions;
  for (const RepeatedFlag& flag : repeated) {
    actions.push_back(
        {flag.name == "message" ? Action::Kind::kMessage : Action::Kind::kAppend, flag.value});
  }
  return actions;
}

Mode ModeOf(const ChatOptions& options, bool health) {
  if (health) return Mode::kHealth;
  if (!options.actions.empty() || options.stats || options.json) return Mode::kScripted;
  return Mode::kInteractive;
}

void Validate(const ChatOptions& options) {
  if (options.server.empty()) throw UsageError("--server HOST:PORT is required");
  if (options.mode == Mode::kHealth) {
    if (!options.actions.empty() || options.stats || options.create_session ||
        !options.session_id.empty()) {
      throw UsageError("--health takes no session, turns or --stats");
    }
    return;
  }
  if (!options.create_session && (!options.create.system_prompt().empty() || PolicyFlagsGiven())) {
    throw UsageError("--system and the policy flags apply to --new only");
  }
  if (options.mode == Mode::kScripted && !options.create_session && options.session_id.empty()) {
    throw UsageError("scripted mode needs --new or --session ID");
  }
}

}  // namespace

ChatOptions ParseOptions(int argc, char** argv) {
  ConfigureHelp();
  SplitArgs split = ExtractRepeatedFlags(argc, argv, {"message", "append"});
  if (!split.error.empty()) throw UsageError(split.error);
  const std::vector<char*> positional =
      absl::ParseCommandLine(static_cast<int>(split.rest.size()), split.rest.data());
  if (positional.size() > 1) {
    throw UsageError(std::string("unexpected argument '") + positional[1] +
                     "' (text goes in --message)");
  }

  ChatOptions options;
  options.server = absl::GetFlag(FLAGS_server);
  options.create_session = absl::GetFlag(FLAGS_new);
  options.session_id = absl::GetFlag(FLAGS_session);
  options.create.set_system_prompt(absl::GetFlag(FLAGS_system));
  if (options.create_session) {
    *options.create.mutable_policy() = PolicyFromFlags();
    options.create.set_session_id(options.session_id);
  }
  options.sampling = SamplingFromFlags();
  options.actions = ActionsFrom(split.repeated);
  options.append_role = absl::GetFlag(FLAGS_append_role);
  options.json = absl::GetFlag(FLAGS_json);
  options.stats = absl::GetFlag(FLAGS_stats);
  options.health_service = absl::GetFlag(FLAGS_health_service);
  const int64_t deadline_ms = absl::GetFlag(FLAGS_deadline_ms);
  if (deadline_ms < 0) throw UsageError("--deadline_ms must be >= 0");
  options.deadline = std::chrono::milliseconds(deadline_ms);
  options.api_key = absl::GetFlag(FLAGS_api_key);
  if (const char* env = std::getenv("GISTMEM_API_KEY"); options.api_key.empty() && env) {
    options.api_key = env;
  }
  if (const std::string ca = absl::GetFlag(FLAGS_tls_ca); !ca.empty()) {
    std::ifstream in(ca);
    if (!in) throw UsageError("cannot read --tls_ca " + ca);
    options.tls_ca_pem.assign(std::istreambuf_iterator<char>(in), {});
  }
  options.mode = ModeOf(options, absl::GetFlag(FLAGS_health));
  Validate(options);
  return options;
}

}  // namespace gistmem::chat
