// gistmem-store-tool: looks at a stopped (or killed) server's RocksDB store from outside, for
// the fault tests (tests/fault/*_test.py).
//
//   gistmem-store-tool check --db DIR [--tenant T]
//       Opens the store as the server does (recovering a killed server's write-ahead log),
//       reads every session of the tenant (default "default") with its transcript and KV
//       segments, and checks that they agree with each other. Prints one JSON object:
//       {"sessions": [{"session_id", "turn_count", "stream_tokens", "next_kv_segment_seq",
//       "window_segment_seq", "retained_entries", "transcript": [{"turn_index", "role",
//       "text", "generated", "tokens"}], "kv_segments": [{"seq", "kind", "entries", "bytes"}],
//       "errors": [...]}], "unreadable": [{"session_id", "error"}], "count_sessions": N,
//       "errors": [...]}. Exit 0 when there is no error at all, 1 when some record is damaged
//       or inconsistent, 3 when the store does not open.
//
//   gistmem-store-tool dump --db DIR --out DIR
//       Writes every raw value of every column family to OUT (<family>-<n>.bin, in key order)
//       and OUT/manifest.json: per file its family and printable key, and for session records
//       their policy and memory state (tests/fuzz/make_corpus.py builds seed inputs from it).
//
//   gistmem-store-tool damage --db DIR --family sessions|transcript|kv --tenant T
//       --session S [--seq N] --mode flip|truncate|drop
//       Damages one stored value behind the store's back (raw RocksDB): flips a byte in the
//       middle of the payload, cuts the value short, or deletes it.
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "rocksdb/db.h"
#include "rocksdb/options.h"
#include "store/keys.h"
#include "store/record_codec.h"
#include "store/records.h"
#include "store/rocks_store.h"

namespace gistmem::store {
namespace {

using nlohmann::json;

constexpr int kExitOk = 0;
constexpr int kExitDamaged = 1;
constexpr int kExitUsage = 2;
constexpr int kExitCannotOpen = 3;

std::map<std::string, std::string> ParseFlags(int argc, char** argv, int first) {
  std::map<std::string, std::string> flags;
  for (int i = first; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg.rfind("--", 0) != 0) {
      flags["!bad"] = arg;
      continue;
    }
    arg = arg.substr(2);
    if (const size_t eq = arg.find('='); eq != std::string::npos) {
      flags[arg.substr(0, eq)] = arg.substr(eq + 1);
    } else if (i + 1 < argc) {
      flags[arg] = argv[++i];
    } else {
      flags["!bad"] = arg;
    }
  }
  return flags;
}

std::string Flag(const std::map<std::string, std::string>& flags, const std::string& name,
                 const std::string& fallback = "") {
  const auto it = flags.find(name);
  return it == flags.end() ? fallback : it->second;
}

int Usage() {
  std::cerr << "usage: gistmem-store-tool check --db DIR [--tenant T]\n"
               "       gistmem-store-tool dump --db DIR --out DIR\n"
               "       gistmem-store-tool damage --db DIR --family sessions|transcript|kv "
               "--tenant T --session S [--seq N] --mode flip|truncate|drop\n";
  return kExitUsage;
}

// Bytes a segment's payload must hold: keys and values of every layer, fp32 rows.
std::optional<int64_t> ExpectedPayloadBytes(const KvSegmentHeader& header) {
  if (header.dtype() != "float32") return std::nullopt;
  return int64_t{2} * header.num_layers() * header.entry_count() * header.num_kv_heads() *
         header.head_dim() * 4;
}

json CheckSession(const RocksStore& store, const SessionRecord& session) {
  json out = {{"session_id", session.session_id()},
              {"turn_count", session.turn_count()},
              {"stream_tokens", session.stream_tokens()},
              {"next_kv_segment_seq", session.next_kv_segment_seq()},
              {"window_segment_seq", nullptr},
              {"transcript", json::array()},
              {"kv_segments", json::array()},
              {"errors", json::array()}};
  json& errors = out["errors"];
  const auto& memory = session.memory();
  if (memory.has_window_segment_seq()) out["window_segment_seq"] = memory.window_segment_seq();
  const int64_t retained = memory.sink_entries() + memory.raw_entries() + memory.gist_entries() +
                           memory.pooled_entries();
  out["retained_entries"] = retained;

  absl::StatusOr<std::vector<TurnRecord>> transcript =
      store.LoadTranscript(session.tenant(), session.session_id());
  if (!transcript.ok()) {
    errors.push_back("transcript: " + transcript.status().ToString());
  } else {
    for (size_t i = 0; i < transcript->size(); ++i) {
      const TurnRecord& turn = (*transcript)[i];
      if (turn.turn_index() != static_cast<int64_t>(i)) {
        errors.push_back("transcript record " + std::to_string(i) + " has turn_index " +
                         std::to_string(turn.turn_index()));
      }
      out["transcript"].push_back({{"turn_index", turn.turn_index()},
                                   {"role", turn.role()},
                                   {"text", turn.text()},
                                   {"generated", turn.generated()},
                                   {"tokens", turn.token_ids_size()},
                                   {"document_id", turn.document_id()}});
    }
    if (static_cast<int64_t>(transcript->size()) != session.turn_count()) {
      errors.push_back("transcript holds " + std::to_string(transcript->size()) +
                       " records, the session record says turn_count " +
                       std::to_string(session.turn_count()));
    }
  }

  absl::StatusOr<std::vector<KvSegment>> segments =
      store.LoadKvSegments(session.tenant(), session.session_id());
  if (!segments.ok()) {
    errors.push_back("kv: " + segments.status().ToString());
  } else {
    int64_t entries = 0;
    int windows = 0;
    bool window_found = false;
    for (const KvSegment& segment : *segments) {
      const KvSegmentHeader& header = segment.header;
      out["kv_segments"].push_back({{"seq", segment.seq},
                                    {"kind", header.kind()},
                                    {"entries", header.entry_count()},
                                    {"bytes", segment.payload.size()}});
      const std::string where = "kv segment " + std::to_string(segment.seq);
      entries += header.entry_count();
      if (header.kind() == "window") {
        ++windows;
        if (memory.has_window_segment_seq() && memory.window_segment_seq() == segment.seq) {
          window_found = true;
        }
      } else if (header.kind() != "pinned") {
        errors.push_back(where + " has kind '" + header.kind() + "'");
      }
      if (segment.seq >= session.next_kv_segment_seq()) {
        errors.push_back(where + " is not below next_kv_segment_seq " +
                         std::to_string(session.next_kv_segment_seq()));
      }
      if (header.model_fingerprint() != session.model_fingerprint()) {
        errors.push_back(where + " is of model " + header.model_fingerprint());
      }
      const std::optional<int64_t> expected = ExpectedPayloadBytes(header);
      if (!expected) {
        errors.push_back(where + " has dtype '" + header.dtype() + "'");
      } else if (*expected != static_cast<int64_t>(segment.payload.size())) {
        errors.push_back(where + " holds " + std::to_string(segment.payload.size()) +
                         " bytes, its header describes " + std::to_string(*expected));
      }
      if (header.positions_size() != header.entry_count()) {
        errors.push_back(where + " lists " + std::to_string(header.positions_size()) +
                         " positions for " + std::to_string(header.entry_count()) + " entries");
      }
    }
    if (windows > 1) errors.push_back(std::to_string(windows) + " window segments");
    if (memory.has_window_segment_seq() && !window_found) {
      errors.push_back("the memory state names window segment " +
                       std::to_string(memory.window_segment_seq()) + ", which is not stored");
    }
    if (entries != retained) {
      errors.push_back("segments hold " + std::to_string(entries) +
                       " entries, the memory state retains " + std::to_string(retained));
    }
  }

  absl::StatusOr<SessionStorageStats> stats = store.Stats(session.tenant(), session.session_id());
  if (!stats.ok()) errors.push_back("stats: " + stats.status().ToString());
  return out;
}

int Check(const std::map<std::string, std::string>& flags) {
  const std::string db = Flag(flags, "db");
  const std::string tenant = Flag(flags, "tenant", "default");
  if (db.empty()) return Usage();
  RocksStoreOptions options;
  options.create_if_missing = false;
  absl::StatusOr<std::unique_ptr<RocksStore>> store = RocksStore::Open(db, options);
  if (!store.ok()) {
    std::cout << json{{"open_error", store.status().ToString()}}.dump() << "\n";
    return kExitCannotOpen;
  }
  json out = {
      {"sessions", json::array()}, {"unreadable", json::array()}, {"errors", json::array()}};
  bool damaged = false;
  int64_t listed = 0;
  std::string page_token;
  do {
    absl::StatusOr<SessionPage> page = (*store)->ListSessions(tenant, kMaxPageSize, page_token);
    if (!page.ok()) {
      out["errors"].push_back("list: " + page.status().ToString());
      damaged = true;
      break;
    }
    for (const SessionRecord& session : page->sessions) {
      json checked = CheckSession(**store, session);
      damaged = damaged || !checked["errors"].empty();
      out["sessions"].push_back(std::move(checked));
      ++listed;
    }
    for (const UnreadableSession& unreadable : page->unreadable) {
      out["unreadable"].push_back(
          {{"session_id", unreadable.session_id}, {"error", unreadable.status.ToString()}});
      damaged = true;
      ++listed;
    }
    page_token = page->next_page_token;
  } while (!page_token.empty());

  absl::StatusOr<int64_t> count = (*store)->CountSessions();
  if (!count.ok()) {
    out["errors"].push_back("count: " + count.status().ToString());
    damaged = true;
  } else {
    out["count_sessions"] = *count;
    if (*count != listed) {
      out["errors"].push_back("CountSessions says " + std::to_string(*count) + ", tenant '" +
                              tenant + "' lists " + std::to_string(listed));
      damaged = true;
    }
  }
  std::cout << out.dump() << "\n";
  return damaged ? kExitDamaged : kExitOk;
}

// The database with every column family, opened raw (no store checks); nullptr on failure.
std::unique_ptr<rocksdb::DB> OpenRaw(const std::string& db_path, std::vector<std::string>& names,
                                     std::vector<rocksdb::ColumnFamilyHandle*>& handles) {
  rocksdb::Status status = rocksdb::DB::ListColumnFamilies(rocksdb::DBOptions(), db_path, &names);
  if (!status.ok()) {
    std::cerr << "list column families: " << status.ToString() << "\n";
    return nullptr;
  }
  std::vector<rocksdb::ColumnFamilyDescriptor> descriptors;
  for (const std::string& name : names) {
    descriptors.emplace_back(name, rocksdb::ColumnFamilyOptions());
  }
  rocksdb::DB* raw = nullptr;
  status = rocksdb::DB::Open(rocksdb::DBOptions(), db_path, descriptors, &handles, &raw);
  if (!status.ok()) {
    std::cerr << "open: " << status.ToString() << "\n";
    return nullptr;
  }
  return std::unique_ptr<rocksdb::DB>(raw);
}

int Dump(const std::map<std::string, std::string>& flags) {
  const std::string db_path = Flag(flags, "db");
  const std::filesystem::path out_dir = Flag(flags, "out");
  if (db_path.empty() || out_dir.empty()) return Usage();
  std::vector<std::string> names;
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  std::unique_ptr<rocksdb::DB> db = OpenRaw(db_path, names, handles);
  if (db == nullptr) return kExitCannotOpen;
  std::filesystem::create_directories(out_dir);
  json manifest = json::array();
  for (size_t f = 0; f < names.size(); ++f) {
    std::unique_ptr<rocksdb::Iterator> it(db->NewIterator(rocksdb::ReadOptions(), handles[f]));
    int n = 0;
    for (it->SeekToFirst(); it->Valid(); it->Next()) {
      const std::string file = names[f] + "-" + std::to_string(n++) + ".bin";
      const rocksdb::Slice value = it->value();
      std::FILE* out = std::fopen((out_dir / file).c_str(), "wb");
      if (out == nullptr || std::fwrite(value.data(), 1, value.size(), out) != value.size()) {
        std::cerr << "cannot write " << (out_dir / file) << "\n";
        return kExitUsage;
      }
      std::fclose(out);
      json entry = {
          {"file", file}, {"family", names[f]}, {"key", PrintableKey(it->key().ToString())}};
      if (names[f] == kSessionsFamily) {
        absl::StatusOr<SessionRecord> record =
            DecodeSessionValue(std::string_view(value.data(), value.size()));
        if (record.ok()) {
          const auto& memory = record->memory();
          entry["session_id"] = record->session_id();
          entry["policy"] = {{"kind", static_cast<int>(record->policy().kind())},
                             {"ratio", record->policy().ratio()},
                             {"window", record->policy().window()},
                             {"sink_tokens", record->policy().sink_tokens()}};
          entry["memory"] = {{"stream_tokens", memory.stream_tokens()},
                             {"raw_tokens", memory.raw_tokens()},
                             {"pooled_spans", memory.pooled_spans()},
                             {"next_entry_serial", memory.next_entry_serial()}};
        }
      }
      manifest.push_back(std::move(entry));
    }
  }
  std::ofstream(out_dir / "manifest.json") << manifest.dump(1) << "\n";
  for (rocksdb::ColumnFamilyHandle* h : handles)
    db->DestroyColumnFamilyHandle(h);
  std::cout << json{{"values", manifest.size()}}.dump() << "\n";
  return kExitOk;
}

int Damage(const std::map<std::string, std::string>& flags) {
  const std::string db_path = Flag(flags, "db");
  const std::string family = Flag(flags, "family");
  const std::string tenant = Flag(flags, "tenant", "default");
  const std::string session = Flag(flags, "session");
  const std::string mode = Flag(flags, "mode");
  if (db_path.empty() || session.empty() ||
      (family != "sessions" && family != "transcript" && family != "kv") ||
      (mode != "flip" && mode != "truncate" && mode != "drop")) {
    return Usage();
  }
  const std::string key = family == "sessions"
                              ? SessionKey(tenant, session)
                              : SequencedKey(tenant, session, std::stoull(Flag(flags, "seq", "0")));

  std::vector<std::string> names;
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  std::unique_ptr<rocksdb::DB> db = OpenRaw(db_path, names, handles);
  if (db == nullptr) return kExitCannotOpen;
  rocksdb::Status status;
  rocksdb::ColumnFamilyHandle* handle = nullptr;
  for (size_t i = 0; i < names.size(); ++i) {
    if (names[i] == family) handle = handles[i];
  }
  int result = kExitOk;
  std::string value;
  if (handle == nullptr) {
    std::cerr << "no column family " << family << "\n";
    result = kExitUsage;
  } else if (status = db->Get(rocksdb::ReadOptions(), handle, key, &value); !status.ok()) {
    std::cerr << "get " << PrintableKey(key) << ": " << status.ToString() << "\n";
    result = kExitUsage;
  } else {
    rocksdb::WriteOptions write;
    write.sync = true;
    if (mode == "drop") {
      status = db->Delete(write, handle, key);
    } else {
      if (mode == "flip") {
        value[kRecordHeaderSize + (value.size() - kRecordHeaderSize) / 2] ^= 0x10;
      } else {
        value.resize(value.size() / 2);
      }
      status = db->Put(write, handle, key, value);
    }
    if (!status.ok()) {
      std::cerr << "write: " << status.ToString() << "\n";
      result = kExitCannotOpen;
    } else {
      std::cout << json{{"key", PrintableKey(key)}, {"family", family}, {"mode", mode}}.dump()
                << "\n";
    }
  }
  for (rocksdb::ColumnFamilyHandle* h : handles)
    db->DestroyColumnFamilyHandle(h);
  return result;
}

}  // namespace
}  // namespace gistmem::store

int main(int argc, char** argv) {
  if (argc < 2) return gistmem::store::Usage();
  const std::string command = argv[1];
  const auto flags = gistmem::store::ParseFlags(argc, argv, 2);
  if (flags.count("!bad")) return gistmem::store::Usage();
  if (command == "check") return gistmem::store::Check(flags);
  if (command == "damage") return gistmem::store::Damage(flags);
  if (command == "dump") return gistmem::store::Dump(flags);
  return gistmem::store::Usage();
}
