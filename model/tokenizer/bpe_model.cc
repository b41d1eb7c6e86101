#include "model/tokenizer/bpe_model.h"

#include <algorithm>

#include "model/tokenizer/byte_level.h"
#include "model/tokenizer/tokenizer_error.h"

namespace gistmem::model {
namespace {

uint64_t PairKey(int32_t left, int32_t right) {
  return (uint64_t(uint32_t(left)) << 32) | uint32_t(right);
}

// A possible merge of the symbol at `position` with its right neighbour.
struct Candidate {
  int32_t rank;
  int32_t position;
  int32_t merged_id;
  // Makes std::*_heap a min-heap on (rank, position).
  bool operator<(const Candidate& other) const {
    return rank != other.rank ? rank > other.rank : position > other.position;
  }
};

struct Symbol {
  int32_t id;
  int32_t prev;
  int32_t next;
  bool merged_away;
};

}  // namespace

BpeModel::BpeModel(TokenMap vocab, const std::vector<std::pair<std::string, std::string>>& merges,
                   BpeOptions options, std::string_view context)
    : vocab_(std::move(vocab)), options_(options) {
  const ByteLevelAlphabet& alphabet = ByteLevelAlphabet::Get();
  for (int byte = 0; byte < 256; ++byte) {
    const auto found = vocab_.find(alphabet.CharFor(static_cast<uint8_t>(byte)));
    byte_ids_[byte] = found == vocab_.end() ? -1 : found->second;
  }

  merges_.reserve(merges.size());
  auto id_of = [&](const std::string& token, size_t rank) {
    const auto found = vocab_.find(token);
    if (found == vocab_.end()) {
      throw TokenizerError(std::string(context) + ": model.merges[" + std::to_string(rank) +
                           "] uses \"" + token + "\", which is not in model.vocab");
    }
    return found->second;
  };
  for (size_t rank = 0; rank < merges.size(); ++rank) {
    const auto& [left, right] = merges[rank];
    const int32_t left_id = id_of(left, rank);
    const int32_t right_id = id_of(right, rank);
    const int32_t merged_id = id_of(left + right, rank);
    // A repeated pair keeps its last rank, as in Hugging Face's merge map.
    merges_.insert_or_assign(PairKey(left_id, right_id), Merge{int32_t(rank), merged_id});
  }
}

const BpeModel::Merge* BpeModel::FindMerge(int32_t left, int32_t right) const {
  const auto found = merges_.find(PairKey(left, right));
  return found == merges_.end() ? nullptr : &found->second;
}

void BpeModel::InitialSymbols(std::string_view bytes, std::vector<int32_t>& symbols) const {
  bool previous_unknown = false;
  for (char c : bytes) {
    const int32_t id = byte_ids_[static_cast<uint8_t>(c)];
    if (id >= 0) {
      symbols.push_back(id);
      previous_unknown = false;
    } else if (options_.unk_id) {
      if (!(options_.fuse_unk && previous_unknown)) symbols.push_back(*options_.unk_id);
      previous_unknown = true;
    }
  }
}

void BpeModel::MergeSymbols(std::vector<int32_t>& ids) const {
  if (ids.size() < 2) return;
  std::vector<Symbol> symbols(ids.size());
  std::vector<Candidate> queue;
  for (size_t i = 0; i < ids.size(); ++i) {
    symbols[i] = {ids[i], int32_t(i) - 1, i + 1 < ids.size() ? int32_t(i + 1) : -1, false};
    if (i + 1 < ids.size()) {
      if (const Merge* merge = FindMerge(ids[i], ids[i + 1])) {
        queue.push_back({merge->rank, int32_t(i), merge->merged_id});
      }
    }
  }
  std::make_heap(queue.begin(), queue.end());

  while (!queue.empty()) {
    std::pop_heap(queue.begin(), queue.end());
    const Candidate top = queue.back();
    queue.pop_back();
    Symbol& left = symbols[top.position];
    if (left.merged_away || left.next < 0) continue;
    Symbol& right = symbols[left.next];
    // Entries go stale when a neighbour merged first; skip those whose pair changed.
    const Merge* merge = FindMerge(left.id, right.id);
    if (merge == nullptr || merge->merged_id != top.merged_id) continue;

    left.id = top.merged_id;
    right.merged_away = true;
    left.next = right.next;
    if (left.next >= 0) symbols[left.next].prev = top.position;

    if (left.prev >= 0) {
      if (const Merge* before = FindMerge(symbols[left.prev].id, left.id)) {
        queue.push_back({before->rank, left.prev, before->merged_id});
        std::push_heap(queue.begin(), queue.end());
      }
    }
    if (left.next >= 0) {
      if (const Merge* after = FindMerge(left.id, symbols[left.next].id)) {
        queue.push_back({after->rank, top.position, after->merged_id});
        std::push_heap(queue.begin(), queue.end());
      }
    }
  }

  ids.clear();
  for (const Symbol& symbol : symbols) {
    if (!symbol.merged_away) ids.push_back(symbol.id);
  }
}

void BpeModel::EncodeWord(std::string_view bytes, std::vector<int32_t>& ids) const {
  if (bytes.empty()) return;
  if (options_.ignore_merges) {
    thread_local std::string spelled;
    spelled.clear();
    ByteLevelAlphabet::Get().Encode(bytes, spelled);
    if (const auto found = vocab_.find(spelled); found != vocab_.end()) {
      ids.push_back(found->second);
      return;
    }
  }
  if (bytes.size() == 1) {
    InitialSymbols(bytes, ids);
    return;
  }
  if (cache_.AppendCached(bytes, ids)) return;

  std::vector<int32_t> word;
  word.reserve(bytes.size());
  InitialSymbols(bytes, word);
  MergeSymbols(word);
  ids.insert(ids.end(), word.begin(), word.end());
  cache_.Insert(bytes, word);
}

}  // namespace gistmem::model
