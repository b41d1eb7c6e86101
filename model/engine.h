// The one interface through which the service, the tools and the benchmarks run a model.
//
// An Engine is a checkpoint loaded for one device ("cpu": the fp32 reference; "cuda": the GPU
// backend) together with the KV page pool it owns. Sequences keep their KV as a
// memory::SessionKv made from that pool; a forward step reads many sequences at once:
//
//   absl::StatusOr<std::unique_ptr<Engine>> engine = LoadEngine(dir, {.device = "cpu"});
//   memory::SessionKv kv((*engine)->kv_pool());
//   ... append one slot per new row to kv (memory::SessionMemory::Reserve does it under a
//   policy), then:
//   absl::StatusOr<std::vector<std::vector<float>>> logits = (*engine)->ForwardBatch(steps);
//
// The service does not want logits but the next token: ForwardSample runs the same step and
// returns, per sequence, the token its sampling request picks (or none), so an engine can keep
// the logits where it computed them and skip the LM head of sequences that sample nothing.
//
// No exception crosses this interface: every failure is a status.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "memory/block_pool.h"
#include "memory/session_kv.h"
#include "model/config.h"
#include "model/sampling.h"

namespace gistmem::model {

// Which rows of a step get logits: all, the last, or the one at `logits_row` (the last raw
// token when a gist token follows it in the same step).
enum class LogitsMode { kAll, kLast, kRow };

// One sequence's rows in a forward step. The rows' slots are already appended to `kv` (with
// their positions and visibility); the step writes their keys and values there and attends
// over everything `kv` lets each row see.
struct SequenceStep {
  std::span<const int32_t> tokens;
  std::span<const int64_t> positions;      // the rows' stream positions, increasing
  std::span<const int64_t> clocks;         // each row's raw clock; empty: 0 for every row
  std::span<const memory::SlotRef> slots;  // where each row's K/V goes
  const memory::SessionKv* kv = nullptr;   // distinct for every sequence of a step
  LogitsMode mode = LogitsMode::kLast;
  int64_t logits_row = 0;  // for kRow
};

// What one sequence of ForwardSample wants instead of logits: the token `params` pick from
// its logits row (the row `mode` names: kLast or kRow), with the session's own draw.
struct TokenRequest {
  SamplingParams params;                     // its seed is unused: `uniform` is the draw
  std::span<const int32_t> previous_tokens;  // for the repetition penalty
  // Sampler::DrawUniform() of the session's sampler for a sampling row (temperature > 0), in
  // [0, 1); ignored when greedy (greedy draws none). So the session's draws, and its tokens,
  // are the same on every engine and after a restart.
  double uniform = 0;
};

// ForwardSample's answer for a sequence without a request.
inline constexpr int32_t kNoToken = -1;

// The CUDA engine's fast paths (tensor-core attention, page tables kept on the device, CUDA
// graphs, sampling on the device) each replace a reference path that computes the same function,
// and `ctest -L gpu` compares every one with its reference. On by default since that suite
// passed on a Hopper GPU (tests/gpu/RESULTS.md, run 8); gistmem-server --cuda_fast_paths=false
// or GISTMEM_CUDA_FAST_PATHS=0 runs the reference paths.
inline constexpr bool kCudaFastPathsByDefault = true;

struct EngineOptions {
  std::string device = "cpu";                // a name from EngineNames()
  int num_threads = 0;                       // CPU: attention threads (0: one per hardware thread)
  int64_t kv_pool_bytes = int64_t{4} << 30;  // the KV page pool's budget
  int32_t block_size = 16;                   // entries per KV page
  // CUDA: keep each sequence's page tables and per-slot arrays on the device between steps,
  // copying only what changed. Off: re-send them whole every step (the reference path the
  // tests compare against, bit for bit).
  bool cuda_kv_mirrors = kCudaFastPathsByDefault;
  // CUDA: run small steps (decode) as CUDA graphs replayed per shape. Off: launch every kernel
  // of every step (the reference path, bit for bit the same results).
  bool cuda_graphs = kCudaFastPathsByDefault;
  // CUDA: ForwardSample samples on the device (only tokens come back, sequences without a
  // request skip the LM head). Off: logits to the host and the CPU sampler (Engine's default).
  bool cuda_device_sampling = kCudaFastPathsByDefault;
  // CUDA: tensor-core attention where head_dim allows (a multiple of 16, at most 128). Off: the
  // CUDA-core kernel, fp32 products (the process-wide GISTMEM_ATTENTION_KERNEL overrides both).
  bool cuda_tensor_core_attention = kCudaFastPathsByDefault;
};

// Every CUDA fast path of `options` on or off at once.
inline void SetCudaFastPaths(EngineOptions& options, bool on) {
  options.cuda_kv_mirrors = options.cuda_graphs = options.cuda_device_sampling =
      options.cuda_tensor_core_attention = on;
}

class Engine {
 public:
  virtual ~Engine() = default;

  virtual const ModelConfig& config() const = 0;
  // "cpu", "cuda:0", ...
  virtual std::string device() const = 0;
  // The pool every sequence's pages come from. It outlives nothing that holds its pages:
  // destroy sessions and documents before the engine.
  virtual memory::BlockPool& kv_pool() = 0;

  // Runs one step over several sequences and returns each one's logits, row-major
  // ([rows, vocab] for kAll, [1, vocab] otherwise), each bit for bit what the sequence gets
  // alone. INVALID_ARGUMENT (nothing written) for token ids outside the vocabulary, positions
  // that do not follow the sequence's entries, mismatched spans, a KV of another pool;
  // RESOURCE_EXHAUSTED or INTERNAL when the device fails (the rows' slots then hold garbage:
  // the caller truncates them). Calls from several threads take turns.
  virtual absl::StatusOr<std::vector<std::vector<float>>> ForwardBatch(
      std::span<const SequenceStep> steps) = 0;

  // Runs the same step as ForwardBatch (the same K/V written, the same logits computed for
  // every sequence that has a request) and returns one token per sequence: what
  // SampleWithUniform(params, logits row, previous_tokens, uniform) gives for requests[i], or
  // kNoToken where requests[i] is null (that sequence only writes its K/V; an engine may skip
  // its LM head). requests.size() == steps.size(); a request's step must not be kAll.
  // Errors as ForwardBatch, plus INVALID_ARGUMENT (nothing written) for bad params, a draw
  // outside [0, 1) or a kAll request; and INVALID_ARGUMENT after the step ran (the rows'
  // slots then hold this step's K/V, but the caller drops them as for a failed step) when a
  // requested row has NaN or +inf logits or none finite. The default runs ForwardBatch and
  // samples on the host; an engine overrides it to sample where its logits are. Calls from
  // several threads take turns.
  virtual absl::StatusOr<std::vector<int32_t>> ForwardSample(
      std::span<const SequenceStep> steps, std::span<const TokenRequest* const> requests);
};

// ForwardSample's checks before anything runs (for engines that override it): OK or
// INVALID_ARGUMENT naming the sequence.
absl::Status CheckTokenRequests(std::span<const SequenceStep> steps,
                                std::span<const TokenRequest* const> requests);

// The engines this binary has, by name.
std::vector<std::string> EngineNames();
// Loads `model_dir` (config.json, safetensors, tokenizer.json) for options.device.
// INVALID_ARGUMENT for an unknown device, UNIMPLEMENTED for one this build lacks, and the
// loader's error (NOT_FOUND, INVALID_ARGUMENT, ...) for a bad checkpoint.
absl::StatusOr<std::unique_ptr<Engine>> LoadEngine(const std::filesystem::path& model_dir,
                                                   const EngineOptions& options);

// Reads `tokens` at `positions` into `kv` with no memory policy (every entry stays, pinned)
// and returns the logits `mode` asks for: the plain single-sequence forward of tools and
// tests. On failure the KV is as it was.
absl::StatusOr<std::vector<float>> ForwardPlain(Engine& engine, memory::SessionKv& kv,
                                                std::span<const int32_t> tokens,
                                                std::span<const int64_t> positions,
                                                LogitsMode mode = LogitsMode::kLast);
// Positions that continue `kv`: next_position() + 0, 1, ...
std::vector<int64_t> NextPositions(const memory::SessionKv& kv, size_t count);

}  // namespace gistmem::model
