// gistmem-store: checks a stopped server's store for damage, and drops or exports what is
// damaged.
//
//   gistmem-store check  --db DIR
//   gistmem-store drop   --db DIR (--damaged | --session TENANT/ID | --document TENANT/ID)
//   gistmem-store export --db DIR (--damaged | --session TENANT/ID) [--out FILE]
//
// check reads every session (record, transcript, KV segments) and document of every tenant
// with checksums verified and prints one JSON object: {"sessions_checked",
// "documents_checked", "damaged": [{"kind", "tenant", "id", "error"}], "scan_errors"}. Exit 0
// when nothing is damaged, 1 when something is, 3 when the store does not open (a running
// server holds its lock: stop it first), 2 for bad arguments.
// drop deletes the named (or every damaged) session or document and prints what it dropped.
// export writes, per session, one JSON line of what can still be read: {"tenant",
// "session_id", "session" (its record, or null), "turns": [{"turn_index", "role", "text",
// ...}], "unreadable": [keys]}.
#include <google/protobuf/util/json_util.h>

#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "clients/cpp/common/help_flags.h"
#include "store/rocks_store.h"

ABSL_FLAG(std::string, db, "", "the store's RocksDB directory (the server's --db; stop it first)");
ABSL_FLAG(bool, damaged, false, "drop / export every session and document check reports");
ABSL_FLAG(std::string, session, "", "drop / export one session, TENANT/ID");
ABSL_FLAG(std::string, document, "", "drop one document, TENANT/ID");
ABSL_FLAG(std::string, out, "", "export: write JSON lines here instead of stdout");

namespace gistmem::store {
namespace {

using nlohmann::json;

constexpr int kExitOk = 0, kExitDamaged = 1, kExitUsage = 2, kExitCannotOpen = 3;

std::optional<std::pair<std::string, std::string>> SplitName(const std::string& name) {
  const size_t slash = name.find('/');
  if (slash == std::string::npos || slash == 0 || slash + 1 == name.size()) return std::nullopt;
  return std::make_pair(name.substr(0, slash), name.substr(slash + 1));
}

json ProtoJson(const google::protobuf::Message& message) {
  std::string text;
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  if (!google::protobuf::util::MessageToJsonString(message, &text, options).ok()) return nullptr;
  return json::parse(text, nullptr, false);
}

json ReportJson(const StoreCheckReport& report) {
  json damaged = json::array();
  for (const DamagedEntry& entry : report.damaged) {
    damaged.push_back({{"kind", entry.kind},
                       {"tenant", entry.tenant},
                       {"id", entry.id},
                       {"error", std::string(entry.status.message())}});
  }
  return {{"sessions_checked", report.sessions_checked},
          {"documents_checked", report.documents_checked},
          {"damaged", damaged},
          {"scan_errors", report.scan_errors}};
}

json RemainsJson(const std::string& tenant, const std::string& id, const SessionRemains& remains) {
  json turns = json::array();
  for (const TurnRecord& turn : remains.turns) {
    json record = ProtoJson(turn);
    if (record.is_object()) record.erase("token_ids");
    turns.push_back(record);
  }
  return {{"tenant", tenant},
          {"session_id", id},
          {"session", remains.session ? ProtoJson(*remains.session) : json(nullptr)},
          {"turns", turns},
          {"unreadable", remains.unreadable}};
}

int Run(const std::string& command) {
  const std::string db = absl::GetFlag(FLAGS_db);
  if (db.empty()) {
    std::cerr << "gistmem-store: --db is required\n";
    return kExitUsage;
  }
  RocksStoreOptions options;
  options.create_if_missing = false;
  absl::StatusOr<std::unique_ptr<RocksStore>> store = RocksStore::Open(db, options);
  if (!store.ok()) {
    std::cerr << "gistmem-store: cannot open " << db << ": " << store.status().message()
              << " (a running server holds the store: stop it first)\n";
    return kExitCannotOpen;
  }
  if (command == "check") {
    const StoreCheckReport report = (*store)->CheckAll();
    std::cout << ReportJson(report).dump(2) << "\n";
    return report.damaged.empty() && report.scan_errors.empty() ? kExitOk : kExitDamaged;
  }

  // drop / export: what to act on.
  std::vector<DamagedEntry> targets;
  if (absl::GetFlag(FLAGS_damaged)) targets = (*store)->CheckAll().damaged;
  for (const auto& [flag, kind] : {std::pair{absl::GetFlag(FLAGS_session), "session"},
                                   std::pair{absl::GetFlag(FLAGS_document), "document"}}) {
    if (flag.empty()) continue;
    std::optional<std::pair<std::string, std::string>> name = SplitName(flag);
    if (!name) {
      std::cerr << "gistmem-store: --" << kind << " takes TENANT/ID, not " << flag << "\n";
      return kExitUsage;
    }
    targets.push_back({kind, name->first, name->second, absl::OkStatus()});
  }
  if (targets.empty() && !absl::GetFlag(FLAGS_damaged)) {
    std::cerr << "gistmem-store " << command << ": give --damaged, --session or --document\n";
    return kExitUsage;
  }

  if (command == "drop") {
    json dropped = json::array();
    int exit_code = kExitOk;
    for (const DamagedEntry& target : targets) {
      const absl::Status status = target.kind == "session"
                                      ? (*store)->DeleteSession(target.tenant, target.id)
                                      : (*store)->DeleteDocument(target.tenant, target.id);
      dropped.push_back({{"kind", target.kind},
                         {"tenant", target.tenant},
                         {"id", target.id},
                         {"ok", status.ok()},
                         {"error", std::string(status.message())}});
      if (!status.ok()) exit_code = kExitDamaged;
    }
    std::cout << json{{"dropped", dropped}}.dump(2) << "\n";
    return exit_code;
  }

  std::ofstream file;
  if (!absl::GetFlag(FLAGS_out).empty()) {
    file.open(absl::GetFlag(FLAGS_out));
    if (!file) {
      std::cerr << "gistmem-store: cannot write " << absl::GetFlag(FLAGS_out) << "\n";
      return kExitUsage;
    }
  }
  std::ostream& out = file.is_open() ? file : std::cout;
  for (const DamagedEntry& target : targets) {
    if (target.kind != "session") continue;  // documents keep no text to export
    out << RemainsJson(target.tenant, target.id, (*store)->ReadRemains(target.tenant, target.id))
               .dump(-1, ' ', false, json::error_handler_t::replace)
        << "\n";
  }
  return kExitOk;
}

}  // namespace
}  // namespace gistmem::store

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "gistmem-store <check|drop|export> --db DIR [--damaged | --session TENANT/ID | "
      "--document TENANT/ID] [--out FILE]");
  gistmem::clients::HelpListsFlagsFrom("store/tool/");
  const std::vector<char*> positional = absl::ParseCommandLine(argc, argv);
  if (positional.size() != 2 ||
      (std::string(positional[1]) != "check" && std::string(positional[1]) != "drop" &&
       std::string(positional[1]) != "export")) {
    std::cerr << absl::ProgramUsageMessage() << "\n";
    return gistmem::store::kExitUsage;
  }
  return gistmem::store::Run(positional[1]);
}
