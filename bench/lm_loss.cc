// gistmem-lm-loss: next-token loss of held-out prose under each memory policy, computed by the
// service's own engine code (memory::SessionMemory lays out the rows and evicts/pools after
// every step, the CPU engine (model/engine.h) runs them, in prompt chunks of
// min(256, MaxChunkTokens(policy)) rows as service/scheduler.cc does with its default
// --prefill_chunk). The gRPC service returns no logits, so this is the closest path to it that
// has them. Driven by bench/lm_loss_eval.py; built by bench/build_lm_loss.sh.
//
//   gistmem-lm-loss tokenize MODEL_DIR TEXTS OUT_IDS
//       TEXTS: UTF-8 documents separated by NUL bytes. OUT_IDS: int32 ids, each document's
//       tokens followed by <|end_of_text|> (training/batches.py load_split's prose).
//   gistmem-lm-loss loss MODEL_DIR ROWS ROW_LEN THREADS POLICY...
//       ROWS: int32 raw ids, rows of ROW_LEN. POLICY: full | window:W:S | pool:R:W:S |
//       gist:R:W:S. Prints one JSON object per policy: loss over every raw target, over the
//       targets past S + 64 raw tokens (training's far_loss), counts, retained entries at the
//       end of a row and the largest cache seen.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "memory/read_rows.h"
#include "memory/session_memory.h"
#include "model/engine.h"
#include "model/gist_config.h"
#include "model/tokenizer/tokenizer.h"

namespace gistmem::bench {
namespace {

constexpr int64_t kPrefillChunk = 256;  // service/config.cc --prefill_chunk default
constexpr int64_t kFarFrom = 4 + 64;    // training/evaluate.py: sink + window raw tokens

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read " + path);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

std::vector<std::string> Split(const std::string& s, char sep) {
  std::vector<std::string> out;
  std::string part;
  std::istringstream in(s);
  while (std::getline(in, part, sep))
    out.push_back(part);
  return out;
}

memory::Policy ParsePolicy(const std::string& spec, const std::filesystem::path& model_dir,
                           int64_t vocab) {
  const std::vector<std::string> f = Split(spec, ':');
  memory::Policy p;
  const absl::StatusOr<memory::PolicyKind> kind = memory::ParsePolicyName(f.at(0));
  if (!kind.ok()) throw std::runtime_error("bad policy " + spec);
  p.kind = *kind;
  if (p.kind == memory::PolicyKind::kWindow) {
    p.window = std::stoll(f.at(1));
    p.sink_tokens = std::stoll(f.at(2));
  } else if (p.kind != memory::PolicyKind::kFull) {
    p.ratio = std::stoll(f.at(1));
    p.window = std::stoll(f.at(2));
    p.sink_tokens = std::stoll(f.at(3));
  }
  if (p.kind == memory::PolicyKind::kGist) {
    const auto gist = model::GistConfig::FromModelDir(model_dir, vocab);
    if (!gist) throw std::runtime_error("the model has no gist_config.json");
    p.gist_token_id = gist->gist_token_id;
  }
  if (const absl::Status ok = memory::Validate(p); !ok.ok()) {
    throw std::runtime_error(std::string(ok.message()));
  }
  return p;
}

int Tokenize(const std::filesystem::path& model_dir, const std::string& texts,
             const std::string& out_path) {
  const model::Tokenizer tok = model::Tokenizer::FromFile(model_dir / "tokenizer.json");
  const std::optional<int32_t> eos = tok.TokenId("<|end_of_text|>");
  if (!eos) throw std::runtime_error("no <|end_of_text|> token");
  const std::string all = ReadFile(texts);
  std::vector<int32_t> ids;
  size_t begin = 0, docs = 0;
  while (begin < all.size()) {
    size_t end = all.find('\0', begin);
    if (end == std::string::npos) end = all.size();
    const std::vector<int32_t> doc = tok.Encode(std::string_view(all).substr(begin, end - begin));
    ids.insert(ids.end(), doc.begin(), doc.end());
    ids.push_back(*eos);
    ++docs;
    begin = end + 1;
  }
  std::ofstream out(out_path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(ids.data()),
            static_cast<std::streamsize>(ids.size() * sizeof(int32_t)));
  std::printf("{\"documents\": %zu, \"tokens\": %zu}\n", docs, ids.size());
  return 0;
}

struct Totals {
  double loss = 0, far_loss = 0;
  int64_t n = 0, far_n = 0, right = 0;
  int64_t retained_sum = 0, most_retained = 0, rows = 0, stream_sum = 0;
};

// One row through a fresh session memory; adds its targets' losses to `t`.
void Row(model::Engine& engine, const memory::Policy& policy, std::span<const int32_t> raw,
         Totals& t) {
  const int64_t vocab = engine.config().vocab_size;
  memory::SessionMemory memory(engine.kv_pool(), policy);
  memory.BeginTurn();
  const memory::RowPlan plan = memory.Plan(raw);
  const int64_t step = std::min(kPrefillChunk, memory::MaxChunkTokens(policy));
  int64_t raw_seen = 0;  // raw index of the next raw row
  for (int64_t begin = 0; begin < plan.size(); begin += step) {
    const int64_t end = std::min(plan.size(), begin + step);
    absl::StatusOr<std::vector<float>> read =
        memory::ReadRows(engine, memory, plan, begin, end, model::LogitsMode::kAll);
    if (!read.ok()) throw std::runtime_error(read.status().ToString());
    const std::vector<float>& logits = *read;
    for (int64_t r = begin; r < end; ++r) {
      if (plan.entries[r].kind == memory::EntryKind::kGist) continue;  // no label
      const int64_t j = raw_seen++;
      if (j + 1 >= static_cast<int64_t>(raw.size())) continue;  // the last raw token
      const int32_t target = raw[j + 1];
      const float* row = logits.data() + (r - begin) * vocab;
      const float top = *std::max_element(row, row + vocab);
      double sum = 0;
      for (int64_t v = 0; v < vocab; ++v)
        sum += std::exp(double(row[v]) - top);
      const double loss = std::log(sum) + top - row[target];
      t.loss += loss;
      t.n += 1;
      t.right += std::max_element(row, row + vocab) - row == target;
      if (j + 1 >= kFarFrom) {
        t.far_loss += loss;
        t.far_n += 1;
      }
    }
    t.most_retained = std::max(t.most_retained, memory.Counts().total());
  }
  memory.EndTurn();
  t.retained_sum += memory.Counts().total();
  t.stream_sum += memory.state().stream_tokens;
  t.rows += 1;
}

int Loss(const std::filesystem::path& model_dir, const std::string& rows_path, int64_t row_len,
         int threads, const std::vector<std::string>& specs) {
  absl::StatusOr<std::unique_ptr<model::Engine>> loaded =
      model::LoadEngine(model_dir, {.device = "cpu", .num_threads = threads});
  if (!loaded.ok()) throw std::runtime_error(loaded.status().ToString());
  model::Engine* engine = loaded->get();
  const std::string bytes = ReadFile(rows_path);
  std::vector<int32_t> ids(bytes.size() / sizeof(int32_t));
  std::copy_n(bytes.data(), ids.size() * sizeof(int32_t), reinterpret_cast<char*>(ids.data()));
  const int64_t rows = static_cast<int64_t>(ids.size()) / row_len;
  for (const std::string& spec : specs) {
    const memory::Policy policy = ParsePolicy(spec, model_dir, engine->config().vocab_size);
    Totals t;
    for (int64_t i = 0; i < rows; ++i)
      Row(*engine, policy, std::span(ids).subspan(i * row_len, row_len), t);
    std::printf(
        "{\"policy\": \"%s\", \"describe\": \"%s\", \"rows\": %ld, \"targets\": %ld, "
        "\"loss\": %.6f, \"far_targets\": %ld, \"far_loss\": %.6f, \"token_acc\": %.6f, "
        "\"retained_at_end_mean\": %.2f, \"most_retained\": %ld, \"stream_at_end_mean\": %.2f}\n",
        spec.c_str(), memory::Describe(policy).c_str(), t.rows, t.n, t.loss / double(t.n), t.far_n,
        t.far_loss / double(t.far_n), double(t.right) / double(t.n),
        double(t.retained_sum) / double(t.rows), t.most_retained,
        double(t.stream_sum) / double(t.rows));
    std::fflush(stdout);
  }
  return 0;
}

}  // namespace
}  // namespace gistmem::bench

int main(int argc, char** argv) {
  try {
    const std::vector<std::string> args(argv + 1, argv + argc);
    if (args.size() == 4 && args[0] == "tokenize") {
      return gistmem::bench::Tokenize(args[1], args[2], args[3]);
    }
    if (args.size() >= 6 && args[0] == "loss") {
      return gistmem::bench::Loss(args[1], args[2], std::stoll(args[3]), std::stoi(args[4]),
                                  std::vector<std::string>(args.begin() + 5, args.end()));
    }
    std::fprintf(stderr,
                 "usage: gistmem-lm-loss tokenize MODEL_DIR TEXTS OUT_IDS\n"
                 "       gistmem-lm-loss loss MODEL_DIR ROWS ROW_LEN THREADS POLICY...\n");
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "gistmem-lm-loss: %s\n", e.what());
    return 1;
  }
}
