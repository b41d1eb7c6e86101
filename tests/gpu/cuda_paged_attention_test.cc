// Paged attention against a float64 CPU reference over the same memory/kv_layout.h views, for
// both kernels (every case runs under CUDA cores and tensor cores).
//
// Layouts are random: pages handed out from a shuffled free list (scattered, never in order),
// segments of every kind (pinned with positions in order, a window ring whose slots' visibility
// has ended or not begun, pooled entries placed late with early positions, shared documents
// with rope offsets), grouped-query heads, batches of 1..64 sequences from 1 to ~3000 slots,
// prefill (many rows) and decode (one or two rows) paths, with and without KV splits (forced
// split lengths that are not multiples of the 64-slot tile put split ends mid-tile). Outputs are
// poisoned with NaN before each run.
//
// Tolerance, CUDA cores: both sides read the same bf16 K/V bits and the same fp32 queries; the
// GPU sums in fp32 (scores over head_dim, softmax over up to ~3000 slots, splits combined), the
// reference in float64. fp32 rounding over such sums stays below 1e-5 relative; we allow 2e-4
// absolute on outputs of magnitude <= 1 (V entries are in [-1, 1]), which also covers sincosf's
// rotation of shared-segment queries.
//
// Tolerance, tensor cores: the kernel rounds the (rotated) query and the softmax weights P to
// bf16. The reference uses the bf16-rounded query itself (for a shared segment: the rounding of
// the float64 rotation; where the GPU's fp32 rotation, within 2^-19 (|a| + |b|) of it, could
// round to the neighbouring bf16 value, that element's difference is a score error budget), so
// what remains is P's rounding: out = sum_j p~_j v_j / sum_j p_j with |p~_j - p_j| <= 2^-8 p_j
// (bf16 keeps 8 significant bits: its unit roundoff is 2^-8, as fp32's is 2^-24), hence
// |error_d| <= 2^-8 sum_j w_j |v_jd| (w = exact softmax weights). Score errors e_j (fp32
// accumulation in the mma, bounded by 2^-17 sum_d |q_d k_jd| * scale, exp2's, and the rounding
// budget above) change the weights by at most a factor e^(2 max e_j) - 1, and fp32 sums add
// 2e-4 relative. So bound_d = (1.02 * 2^-8 + 2e-4 + expm1(2 max_j e_j)) * sum_j w_j |v_jd| +
// 1e-6: about 2e-3 on these outputs, so that a wrong slot, head, mask or stale tile (errors of
// 0.01 .. 1, largest in the sharp-softmax cases) fails. (The first H100 run, with 2^-9 here,
// found errors up to 1.15x that half-size bound: the worst case of P's rounding, not a fault.)
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdlib>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "memory/kv_layout.h"
#include "model/backend/cuda/bf16.h"
#include "model/backend/cuda/device_kv_view.h"
#include "model/backend/cuda/paged_attention.h"
#include "model/backend/cuda/paged_attention_plan.h"
#include "tests/gpu/gpu_test_util.h"

namespace gistmem::cuda {
namespace {

using testing::Allocate;
using testing::Download;
using testing::Upload;

struct Config {
  int32_t num_heads = 8, num_kv_heads = 2, head_dim = 128;
  bool nothing_visible = false;  // every query row's clock is -1: no non-shared slot is visible
  int32_t sliding_window = 0;
  int32_t block_size = 16;
  int32_t num_layers = 2, layer = 1;
  int32_t num_sequences = 16;
  int32_t max_slots = 3000;
  int32_t min_slots = 1;
  int32_t max_prefill_rows = 40;
  float decode_fraction = 0.5f;
  float query_scale = 1.f;  // larger: sharper softmax
  bool with_shared = true;
  bool whole_prefill = false;  // every position is a query row (a prefill from the start)
  int32_t raw_window = 0;      // > 0: window slot p stays visible while clock <= p + raw_window
  AttentionOptions options;
};

struct Sequence {
  std::vector<HostKvSegment> segments;
  std::vector<int32_t> positions, clocks;  // query rows
};

class Fixture {
 public:
  explicit Fixture(const Config& c, unsigned seed) : c_(c), rng_(seed) {
    layout_ = {.block_size = c.block_size,
               .num_layers = c.num_layers,
               .kv_dim = c.num_kv_heads * c.head_dim,
               .element_bytes = 2};
  }

  // A page from the shuffled free list.
  int32_t TakePage() { return free_pages_.at(next_page_++); }

  HostKvSegment MakeSegment(int32_t slots, bool shared) {
    HostKvSegment seg;
    seg.num_slots = slots;
    seg.shared = shared;
    for (int32_t i = 0; i < (slots + c_.block_size - 1) / c_.block_size; ++i)
      seg.page_ids.push_back(TakePage());
    return seg;
  }

  void Build() {
    std::uniform_real_distribution<double> unit(0, 1);
    // Lengths spread log-uniformly from 1 to max_slots: many short sequences, a few long.
    std::vector<int32_t> lengths;
    int64_t total_pages = 0;
    for (int32_t s = 0; s < c_.num_sequences; ++s) {
      const double lo = std::log(double(c_.min_slots)), hi = std::log(double(c_.max_slots));
      const int32_t len =
          std::max<int32_t>(1, static_cast<int32_t>(std::exp(lo + unit(rng_) * (hi - lo))));
      lengths.push_back(len);
      total_pages += len / c_.block_size + 220 / c_.block_size + 4;
    }
    total_pages += 16;
    free_pages_.resize(total_pages);
    std::iota(free_pages_.begin(), free_pages_.end(), 0);
    std::shuffle(free_pages_.begin(), free_pages_.end(), rng_);
    num_pages_ = total_pages;

    for (int32_t s = 0; s < c_.num_sequences; ++s) {
      Sequence seq;
      const int32_t len = lengths[s];
      const bool decode = unit(rng_) < c_.decode_fraction;
      const int32_t rows =
          c_.whole_prefill ? len
          : decode
              ? 1 + (unit(rng_) < 0.2)
              : std::min<int32_t>(len, 1 + static_cast<int32_t>(unit(rng_) * c_.max_prefill_rows));
      // The stream: positions 0..len-1 across pinned and window slots; the last `rows`
      // positions are the query rows (their slots are the step's new rows).
      const int32_t pinned = std::max<int32_t>(1, len / 3);
      const int32_t window = len - pinned;
      HostKvSegment pin = MakeSegment(pinned, false);
      HostKvSegment ring = MakeSegment(window, false);
      const int32_t first_query = len - rows;
      for (int32_t p = 0; p < len; ++p) {
        HostKvSegment& seg = p < pinned ? pin : ring;
        seg.positions.push_back(p);
        // The clock of position p is p here; a slot is visible from its own clock, and
        // some slots' visibility ends (a raw token leaving the window) before the queries.
        const bool ends = unit(rng_) < 0.3 && p < first_query;
        int32_t until =
            ends ? p + static_cast<int32_t>(unit(rng_) * (len - p)) : memory::kVisibleForever;
        if (c_.raw_window > 0 && p >= pinned) until = p + c_.raw_window;
        seg.visible_from.push_back(p);
        seg.visible_until.push_back(until);
      }
      // Pooled entries: placed after everything, with early positions, visible only from a
      // later clock (once their span left the window).
      if (len > 8 && unit(rng_) < 0.7) {
        const int32_t pooled = 1 + static_cast<int32_t>(unit(rng_) * 5);
        HostKvSegment pool = MakeSegment(pooled, false);
        for (int32_t i = 0; i < pooled; ++i) {
          pool.positions.push_back(static_cast<int32_t>(unit(rng_) * first_query));
          pool.visible_from.push_back(static_cast<int32_t>(unit(rng_) * len));
          pool.visible_until.push_back(memory::kVisibleForever);
        }
        seq.segments.push_back(std::move(pin));
        seq.segments.push_back(std::move(ring));
        seq.segments.push_back(std::move(pool));
      } else {
        seq.segments.push_back(std::move(pin));
        seq.segments.push_back(std::move(ring));
      }
      if (c_.with_shared && unit(rng_) < 0.4) {
        HostKvSegment doc = MakeSegment(1 + static_cast<int32_t>(unit(rng_) * 200), true);
        doc.rope_offset = static_cast<int32_t>(unit(rng_) * 5000);
        seq.segments.push_back(std::move(doc));
      }
      // An empty segment (a ring not yet filled) must be harmless.
      if (unit(rng_) < 0.2) seq.segments.push_back(HostKvSegment{});
      std::shuffle(seq.segments.begin(), seq.segments.end(), rng_);  // order is the caller's
      for (int32_t r = 0; r < rows; ++r) {
        seq.positions.push_back(first_query + r);
        seq.clocks.push_back(c_.nothing_visible ? -1 : first_query + r);
      }
      sequences_.push_back(std::move(seq));
    }
    // The pool: random bf16 K/V in [-1, 1] everywhere (unused slots hold values too).
    std::uniform_real_distribution<float> kv(-1.f, 1.f);
    pool_.resize(static_cast<size_t>(num_pages_) * layout_.page_elements());
    for (uint16_t& v : pool_)
      v = FloatToBf16(kv(rng_));
    pool_float_.resize(pool_.size());
    for (size_t i = 0; i < pool_.size(); ++i)
      pool_float_[i] = Bf16ToFloat(pool_[i]);
    std::normal_distribution<float> normal(0.f, c_.query_scale);
    for (const Sequence& seq : sequences_) {
      row_offsets_.push_back(static_cast<int32_t>(positions_.size()));
      positions_.insert(positions_.end(), seq.positions.begin(), seq.positions.end());
      clocks_.insert(clocks_.end(), seq.clocks.begin(), seq.clocks.end());
    }
    row_offsets_.push_back(static_cast<int32_t>(positions_.size()));
    q_stride_ = c_.num_heads * c_.head_dim + 8;  // a strided q, as the fused q|k|v gives
    q_.resize(positions_.size() * q_stride_);
    for (float& v : q_)
      v = normal(rng_);
    for (int32_t i = 0; i < c_.head_dim / 2; ++i)
      inv_freq_.push_back(static_cast<float>(std::pow(10000.0, -2.0 * i / c_.head_dim)));
  }

  // The reference's K (kv = 0) or V row of one slot, as floats (the bf16 values exactly).
  const float* KvRow(int32_t page, int32_t kv, int32_t slot, int32_t kv_head) const {
    return &pool_float_[page * layout_.page_elements() + layout_.RowOffset(c_.layer, kv, slot) +
                        kv_head * c_.head_dim];
  }

  struct Expected {
    std::vector<double> value, bound;
  };

  // float64 attention of one (row, head) over the sequence's segments, and each output's bound.
  // `rounded`: the query as the tensor-core kernel uses it (bf16), see the top of the file.
  Expected Reference(int32_t s, int32_t row_in_seq, int32_t head, bool rounded) const {
    const Sequence& seq = sequences_[s];
    const int32_t row = row_offsets_[s] + row_in_seq;
    const int32_t p = seq.positions[row_in_seq], clock = seq.clocks[row_in_seq];
    const int32_t hd = c_.head_dim, half = hd / 2;
    const int32_t kv_head = head / (c_.num_heads / c_.num_kv_heads);
    const double scale = 1.0 / std::sqrt(double(hd));
    const float* q = &q_[row * q_stride_ + head * hd];
    std::vector<double> scores, score_errors;
    std::vector<const float*> values;  // V rows of the visible slots
    for (const HostKvSegment& seg : seq.segments) {
      std::vector<double> qr(q, q + hd), flip(hd, 0.0);
      if (seg.shared) {
        for (int32_t i = 0; i < half; ++i) {
          const float angle = static_cast<float>(-seg.rope_offset) * inv_freq_[i];
          const double cs = std::cos(double(angle)), sn = std::sin(double(angle));
          qr[i] = q[i] * cs - q[i + half] * sn;
          qr[i + half] = q[i + half] * cs + q[i] * sn;
        }
      }
      if (rounded) {
        for (int32_t d = 0; d < hd; ++d) {
          const double slack =
              seg.shared ? std::ldexp(std::fabs(q[d]) + std::fabs(q[(d + half) % hd]), -19) : 0;
          const double lo = Bf16ToFloat(FloatToBf16(static_cast<float>(qr[d] - slack)));
          const double hi = Bf16ToFloat(FloatToBf16(static_cast<float>(qr[d] + slack)));
          qr[d] = lo;
          flip[d] = hi - lo;
        }
      }
      for (int32_t i = 0; i < seg.num_slots; ++i) {
        if (!seg.shared) {
          const int32_t kp = seg.positions[i];
          if (kp > p) continue;
          if (c_.sliding_window > 0 && p - kp >= c_.sliding_window) continue;
          if (seg.visible_from[i] > clock || clock > seg.visible_until[i]) continue;
        }
        const int32_t page = seg.page_ids[i / c_.block_size], slot = i % c_.block_size;
        double dot = 0, magnitude = 0, flipped = 0;
        const float* k = KvRow(page, 0, slot, kv_head);
        for (int32_t d = 0; d < hd; ++d) {
          dot += qr[d] * k[d];
          magnitude += std::fabs(qr[d] * k[d]);
          flipped += flip[d] * std::fabs(k[d]);
        }
        scores.push_back(dot * scale);
        score_errors.push_back((flipped + std::ldexp(magnitude, -17)) * scale);
        values.push_back(KvRow(page, 1, slot, kv_head));
      }
    }
    Expected e{std::vector<double>(hd, 0.0), std::vector<double>(hd, 1e-6)};
    if (scores.empty()) return e;
    const double max = *std::max_element(scores.begin(), scores.end());
    double sum = 0, worst_score_error = 0;
    std::vector<double> weights(scores.size());
    for (size_t j = 0; j < scores.size(); ++j) {
      weights[j] = std::exp(scores[j] - max);
      sum += weights[j];
      // exp2 and the scaled max in fp32: a few ulp of the exponent.
      worst_score_error =
          std::max(worst_score_error, score_errors[j] + std::ldexp(1 + max - scores[j], -20));
    }
    std::vector<double> spread(hd, 0.0);  // sum_j w_j |v_jd|
    for (size_t j = 0; j < scores.size(); ++j) {
      for (int32_t d = 0; d < hd; ++d) {
        e.value[d] += weights[j] / sum * values[j][d];
        spread[d] += weights[j] / sum * std::fabs(values[j][d]);
      }
    }
    for (int32_t d = 0; d < hd; ++d) {
      e.bound[d] = rounded
                       ? (1.02 * std::ldexp(1.0, -8) + 2e-4 + std::expm1(2 * worst_score_error)) *
                                 spread[d] +
                             1e-6
                       : 2e-4;
    }
    return e;
  }

  void RunAndCompare() {
    std::vector<std::vector<HostKvSegment>> host;
    for (const Sequence& seq : sequences_)
      host.push_back(seq.segments);
    absl::StatusOr<DeviceKvViews> views = DeviceKvViews::Upload(host, c_.block_size);
    ASSERT_OK(views.status());
    absl::StatusOr<std::unique_ptr<PagedAttention>> attention = PagedAttention::Create(c_.options);
    ASSERT_OK(attention.status());
    const AttentionShape shape{.num_heads = c_.num_heads,
                               .num_kv_heads = c_.num_kv_heads,
                               .head_dim = c_.head_dim,
                               .sliding_window = c_.sliding_window};
    ASSERT_OK((*attention)->Plan(views->views(), row_offsets_, shape, nullptr));
    const bool tensor_cores = (*attention)->planned_kernel() == AttentionKernel::kTensorCores;
    if (c_.options.kernel != AttentionKernel::kAuto) {
      ASSERT_EQ((*attention)->planned_kernel(), c_.options.kernel);
    }
    DeviceBuffer d_pool = Upload(pool_), d_q = Upload(q_), d_pos = Upload(positions_),
                 d_clock = Upload(clocks_), d_freq = Upload(inv_freq_);
    const size_t out_count = positions_.size() * c_.num_heads * c_.head_dim;
    DeviceBuffer d_out = Upload(std::vector<float>(out_count, std::nanf("")));
    AttentionInputs in;
    in.pool = d_pool.get();
    in.layout = layout_;
    in.layer = c_.layer;
    in.q = d_q.as<float>();
    in.q_stride = q_stride_;
    in.positions = d_pos.as<int32_t>();
    in.clocks = d_clock.as<int32_t>();
    in.inv_freq = d_freq.as<float>();
    in.out = d_out.as<float>();
    ASSERT_OK((*attention)->Run(in, nullptr));
    const std::vector<float> got = Download<float>(d_out, out_count);
    std::printf(
        "%s: %zu sequences, %zu rows: %lld prefill CTAs, %lld decode CTAs, %lld outputs "
        "combined from splits\n",
        tensor_cores ? "tensor cores" : "CUDA cores", sequences_.size(), positions_.size(),
        (long long)(*attention)->prefill_ctas(), (long long)(*attention)->decode_ctas(),
        (long long)(*attention)->combined_outputs());
    double worst = 0, worst_ratio = 0, sum_error = 0, sum_bound = 0;
    int64_t outputs = 0;
    for (size_t s = 0; s < sequences_.size(); ++s) {
      for (size_t r = 0; r < sequences_[s].positions.size(); ++r) {
        for (int32_t h = 0; h < c_.num_heads; ++h) {
          const Expected want =
              Reference(static_cast<int32_t>(s), static_cast<int32_t>(r), h, tensor_cores);
          const size_t row = row_offsets_[s] + r;
          for (int32_t d = 0; d < c_.head_dim; ++d) {
            const double value = got[(row * c_.num_heads + h) * c_.head_dim + d];
            const double diff = std::isnan(value) ? 1e9 : std::fabs(value - want.value[d]);
            worst = std::max(worst, diff);
            worst_ratio = std::max(worst_ratio, diff / want.bound[d]);
            sum_error += diff;
            sum_bound += want.bound[d];
            ++outputs;
            ASSERT_LE(diff, want.bound[d])
                << "sequence " << s << " row " << r << " head " << h << " dim " << d << ": got "
                << value << " want " << want.value[d];
          }
        }
      }
    }
    std::printf(
        "max |gpu - float64| = %.3g, max error / bound = %.3g, mean error %.3g, mean "
        "bound %.3g\n",
        worst, worst_ratio, sum_error / std::max<int64_t>(1, outputs),
        sum_bound / std::max<int64_t>(1, outputs));
  }

 private:
  Config c_;
  std::mt19937 rng_;
  memory::PageLayout layout_;
  std::vector<int32_t> free_pages_;
  size_t next_page_ = 0;
  int64_t num_pages_ = 0;
  std::vector<Sequence> sequences_;
  std::vector<uint16_t> pool_;
  std::vector<float> pool_float_;
  std::vector<int32_t> row_offsets_, positions_, clocks_;
  std::vector<float> q_, inv_freq_;
  int64_t q_stride_ = 0;
};

void RunCase(const Config& config, unsigned seed) {
  Fixture fixture(config, seed);
  fixture.Build();
  fixture.RunAndCompare();
}

// Every case runs under both kernels.
class CudaPagedAttention : public ::testing::TestWithParam<AttentionKernel> {
 protected:
  void SetUp() override {
    GISTMEM_SKIP_WITHOUT_GPU();
    // GISTMEM_ATTENTION_KERNEL overrides the kernel each case asks for (and its bound).
    if (std::getenv("GISTMEM_ATTENTION_KERNEL") != nullptr) GTEST_SKIP() << "forced by the env";
  }
  Config Base() const {
    Config c;
    c.options.kernel = GetParam();
    return c;
  }
};

INSTANTIATE_TEST_SUITE_P(Kernels, CudaPagedAttention,
                         ::testing::Values(AttentionKernel::kCudaCores,
                                           AttentionKernel::kTensorCores),
                         [](const ::testing::TestParamInfo<AttentionKernel>& info) {
                           return std::string(AttentionKernelName(info.param));
                         });

TEST_P(CudaPagedAttention, MixedBatchOfSixteenGqa) {
  RunCase(Base(), 1);
}

TEST_P(CudaPagedAttention, SixtyFourSequencesHeadDim64) {
  Config c = Base();
  c.num_sequences = 64;
  c.num_heads = 4;
  c.num_kv_heads = 4;
  c.head_dim = 64;
  c.max_slots = 2000;
  RunCase(c, 2);
}

TEST_P(CudaPagedAttention, SingleLongDecodeSplitsAcrossTheGpu) {
  Config c = Base();
  c.num_sequences = 1;
  c.decode_fraction = 1.f;
  c.min_slots = 1500;
  c.max_slots = 3000;
  c.query_scale = 4.f;  // sharp softmax: the combine must weigh splits right
  for (unsigned seed = 10; seed < 14; ++seed)
    RunCase(c, seed);
}

TEST_P(CudaPagedAttention, ForcedSmallSplitsOnPrefillAndDecode) {
  Config c = Base();
  c.num_sequences = 24;
  c.options.kv_chunk = 64;
  c.query_scale = 3.f;
  RunCase(c, 3);
}

TEST_P(CudaPagedAttention, SlidingWindowAndTinyHeads) {
  Config c = Base();
  c.num_heads = 4;
  c.num_kv_heads = 1;
  c.head_dim = 16;
  c.sliding_window = 37;
  c.with_shared = false;  // a sliding-window model attaches no documents (CPU reference rule)
  c.block_size = 4;
  c.num_sequences = 20;
  c.max_slots = 500;
  RunCase(c, 4);
}

// Prefills from position 0 under causality alone and under a short raw window (the shape of a
// gist or window prefill): most K/V tiles are seen by no query of a CTA (the tensor-core kernel
// skips them), the others partly; with and without KV splits (a split whose every tile is
// skipped must combine as empty).
TEST_P(CudaPagedAttention, WholePrefillSkipsTilesNoQuerySees) {
  Config c = Base();
  c.num_sequences = 3;
  c.decode_fraction = 0.f;
  c.whole_prefill = true;
  c.min_slots = 300;
  c.max_slots = 700;
  c.query_scale = 2.f;
  RunCase(c, 21);  // causality alone
  c.raw_window = 48;
  RunCase(c, 22);
  c.options.kv_chunk = 128;
  RunCase(c, 23);
}

// Split ends that fall inside tiles and pages (chunks that are no multiple of 64 or 16), on
// short and long sequences, prefill and decode, segments of every length: the tiles at both
// ends of a split are partial, and a tile's rows past its end must be zeros, not the ring
// stage's previous tile.
TEST_P(CudaPagedAttention, SplitsAndSegmentsEndMidTile) {
  Config c = Base();
  c.num_sequences = 12;
  c.max_slots = 1200;
  c.query_scale = 6.f;  // nearly one-hot: a stale or misplaced slot moves an output by ~1
  for (int32_t chunk : {40, 100, 150, 333}) {
    c.options.kv_chunk = chunk;
    RunCase(c, 40 + chunk);
  }
}

// One-row decode (and a few two-row ones) for GQA groups 1, 3 (the shipped model: 6 heads over
// 2 KV heads, head_dim 64), 4 and 8, head_dim 16, 64 and 128: the decode CTA's 16-row M tile is
// mostly padding, its four warps split each tile's slots and merge.
TEST_P(CudaPagedAttention, DecodeGroupsAndHeadDims) {
  struct Shape {
    int32_t heads, kv_heads, head_dim;
  };
  for (const Shape& shape : {Shape{2, 2, 64}, Shape{6, 2, 64}, Shape{8, 2, 128}, Shape{16, 2, 128},
                             Shape{3, 1, 16}, Shape{8, 1, 16}, Shape{4, 4, 128}}) {
    Config c = Base();
    c.num_heads = shape.heads;
    c.num_kv_heads = shape.kv_heads;
    c.head_dim = shape.head_dim;
    c.num_sequences = 10;
    c.decode_fraction = 1.f;
    c.max_slots = 1500;
    c.query_scale = 5.f;
    RunCase(c, 60 + shape.heads * 7 + shape.head_dim);
  }
}

// Head dims below the kernels' template maximum (48 and 96: the tensor-core kernel's rows are
// padded, its unused dims never read), prefill and decode mixed, with shared segments (whose
// query rotation pairs dimension d with d + head_dim / 2, in another 16-dim step).
TEST_P(CudaPagedAttention, HeadDimsBelowTheTemplateMaximum) {
  for (int32_t head_dim : {48, 96, 32}) {
    Config c = Base();
    c.head_dim = head_dim;
    c.num_heads = 6;
    c.num_kv_heads = 3;
    c.num_sequences = 10;
    c.max_slots = 1000;
    c.query_scale = 4.f;
    RunCase(c, 80 + head_dim);
  }
}

// A prefill CTA of the tensor-core kernel holds 64 rows of one head (group 1): the causal
// diagonal crosses its warps; plus a sliding window on a 128-dim model.
TEST_P(CudaPagedAttention, WholePrefillGroupOneAndSlidingWindow) {
  Config c = Base();
  c.num_heads = 2;
  c.num_kv_heads = 2;
  c.num_sequences = 2;
  c.decode_fraction = 0.f;
  c.whole_prefill = true;
  c.min_slots = 200;
  c.max_slots = 600;
  c.query_scale = 3.f;
  RunCase(c, 90);
  c.with_shared = false;
  c.sliding_window = 100;
  c.num_sequences = 4;
  RunCase(c, 91);
}

// Every query's clock precedes every slot's visibility: all outputs are zeros, split or not.
TEST_P(CudaPagedAttention, EveryQuerySeesNothing) {
  Config c = Base();
  c.nothing_visible = true;
  c.with_shared = false;
  c.num_sequences = 8;
  RunCase(c, 95);
  c.options.kv_chunk = 100;
  RunCase(c, 96);
}

TEST_P(CudaPagedAttention, RowThatSeesNothingGetsZeros) {
  // One sequence whose only slot becomes visible after the query's clock.
  std::vector<std::vector<HostKvSegment>> host(1);
  HostKvSegment seg;
  seg.num_slots = 1;
  seg.page_ids = {0};
  seg.positions = {0};
  seg.visible_from = {5};
  seg.visible_until = {memory::kVisibleForever};
  host[0].push_back(seg);
  absl::StatusOr<DeviceKvViews> views = DeviceKvViews::Upload(host, 16);
  ASSERT_OK(views.status());
  const memory::PageLayout layout{
      .block_size = 16, .num_layers = 1, .kv_dim = 64, .element_bytes = 2};
  absl::StatusOr<std::unique_ptr<PagedAttention>> attention =
      PagedAttention::Create(Base().options);
  ASSERT_OK(attention.status());
  const std::vector<int32_t> offsets = {0, 1};
  ASSERT_OK((*attention)->Plan(views->views(), offsets, {2, 1, 64, 0}, nullptr));
  DeviceBuffer pool = Upload(std::vector<uint16_t>(layout.page_elements(), FloatToBf16(1.f)));
  DeviceBuffer q = Upload(std::vector<float>(128, 1.f)), pos = Upload(std::vector<int32_t>{3}),
               clock = Upload(std::vector<int32_t>{3}), freq = Upload(std::vector<float>(32, 1.f)),
               out = Upload(std::vector<float>(128, std::nanf("")));
  AttentionInputs in{pool.get(),
                     layout,
                     0,
                     q.as<float>(),
                     128,
                     pos.as<int32_t>(),
                     clock.as<int32_t>(),
                     freq.as<float>(),
                     out.as<float>()};
  ASSERT_OK((*attention)->Run(in, nullptr));
  EXPECT_EQ(Download<float>(out, 128), std::vector<float>(128, 0.f));
}

TEST_P(CudaPagedAttention, RejectsBadShapes) {
  absl::StatusOr<std::unique_ptr<PagedAttention>> attention =
      PagedAttention::Create(Base().options);
  ASSERT_OK(attention.status());
  const std::vector<int32_t> offsets = {0};
  EXPECT_EQ((*attention)->Plan({}, offsets, {8, 3, 64, 0}, nullptr).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ((*attention)->Plan({}, offsets, {8, 2, 256, 0}, nullptr).code(),
            absl::StatusCode::kUnimplemented);
  // head_dim 24: CUDA cores run it, tensor cores refuse it.
  EXPECT_EQ((*attention)->Plan({}, offsets, {8, 2, 24, 0}, nullptr).code(),
            GetParam() == AttentionKernel::kTensorCores ? absl::StatusCode::kUnimplemented
                                                        : absl::StatusCode::kOk);
}

TEST(CudaPagedAttentionKernelChoice, AutoPicksTensorCoresWhenHeadDimAllows) {
  GISTMEM_SKIP_WITHOUT_GPU();
  if (std::getenv("GISTMEM_ATTENTION_KERNEL") != nullptr) GTEST_SKIP() << "forced by the env";
  absl::StatusOr<std::unique_ptr<PagedAttention>> attention = PagedAttention::Create();
  ASSERT_OK(attention.status());
  const std::vector<int32_t> offsets = {0};
  ASSERT_OK((*attention)->Plan({}, offsets, {8, 2, 64, 0}, nullptr));
  EXPECT_EQ((*attention)->planned_kernel(), AttentionKernel::kTensorCores);
  ASSERT_OK((*attention)->Plan({}, offsets, {8, 2, 24, 0}, nullptr));
  EXPECT_EQ((*attention)->planned_kernel(), AttentionKernel::kCudaCores);
}

TEST(CudaPagedAttentionKernelChoice, NamesRoundTrip) {
  for (AttentionKernel k :
       {AttentionKernel::kAuto, AttentionKernel::kTensorCores, AttentionKernel::kCudaCores}) {
    absl::StatusOr<AttentionKernel> parsed = ParseAttentionKernel(AttentionKernelName(k));
    ASSERT_OK(parsed.status());
    EXPECT_EQ(*parsed, k);
  }
  EXPECT_FALSE(ParseAttentionKernel("tensor").ok());
}

// The page-of-a-slot division the tensor-core kernel's loads use (the device runs the same
// formula through __umulhi).
TEST(CudaPagedAttentionKernelChoice, FastDivIsExact) {
  std::mt19937 rng(7);
  std::uniform_int_distribution<int32_t> any(0, INT32_MAX);
  for (int32_t d : {1, 2, 3, 4, 5, 7, 12, 16, 17, 31, 32, 64, 100, 1000, 4096, 65537}) {
    const attention::FastDiv f = attention::FastDiv::Make(d);
    for (int32_t n : {0, 1, d - 1, d, d + 1, INT32_MAX - 1, INT32_MAX})
      ASSERT_EQ(f.Div(n), n / d) << n << " / " << d;
    for (int i = 0; i < 20000; ++i) {
      const int32_t n = any(rng);
      ASSERT_EQ(f.Div(n), n / d) << n << " / " << d;
    }
  }
}

}  // namespace
}  // namespace gistmem::cuda
