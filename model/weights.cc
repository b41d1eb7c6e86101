#include "model/weights.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cstring>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

namespace gistmem::model {
namespace {

using nlohmann::json;

// A header larger than this is not a real checkpoint (real ones are a few MB at most).
constexpr uint64_t kMaxHeaderBytes = 100ull << 20;

[[noreturn]] void Fail(const std::filesystem::path& path, const std::string& message) {
  throw WeightsError(path.string() + ": " + message);
}

DType ParseDType(const std::filesystem::path& path, const std::string& tensor,
                 const std::string& name) {
  if (name == "F32") return DType::kF32;
  if (name == "F16") return DType::kF16;
  if (name == "BF16") return DType::kBF16;
  Fail(path, "tensor \"" + tensor + "\": dtype " + name +
                 " is not supported for weights (supported: F32, F16, BF16)");
}

float HalfToFloat(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000) << 16;
  const uint32_t exponent = (h >> 10) & 0x1f;
  uint32_t mantissa = h & 0x3ff;
  uint32_t bits;
  if (exponent == 0x1f) {
    bits = sign | 0x7f800000u | (mantissa << 13);  // inf or nan
  } else if (exponent != 0) {
    bits = sign | ((exponent + 112) << 23) | (mantissa << 13);
  } else if (mantissa == 0) {
    bits = sign;
  } else {
    // Subnormal half: normalize into a float exponent.
    int shift = 0;
    while ((mantissa & 0x400) == 0) {
      mantissa <<= 1;
      ++shift;
    }
    bits = sign | (uint32_t(113 - shift) << 23) | ((mantissa & 0x3ff) << 13);
  }
  return std::bit_cast<float>(bits);
}

// A tensor entry's field, present and of the expected JSON kind.
const json& Field(const std::filesystem::path& path, const std::string& tensor, const json& entry,
                  const char* field, json::value_t kind, const char* kind_name) {
  const auto it = entry.find(field);
  if (it == entry.end()) Fail(path, "tensor \"" + tensor + "\": missing \"" + field + "\"");
  if (it->type() != kind) {
    Fail(path, "tensor \"" + tensor + "\": \"" + field + "\" must be " + kind_name + ", got " +
                   it->dump());
  }
  return *it;
}

// Dimensions are non-negative and their product, in bytes, fits in 64 bits.
std::vector<int64_t> ParseShape(const std::filesystem::path& path, const std::string& tensor,
                                const json& shape, uint64_t& numel) {
  std::vector<int64_t> dims;
  numel = 1;
  for (const json& dim : shape) {
    if (dim.is_number_integer() && !dim.is_number_unsigned()) {
      Fail(path, "tensor \"" + tensor + "\": shape " + shape.dump() + " has a negative dimension");
    }
    if (!dim.is_number_unsigned()) {
      Fail(path,
           "tensor \"" + tensor + "\": shape " + shape.dump() + " has a non-integer dimension");
    }
    const uint64_t d = dim.get<uint64_t>();
    if (d > uint64_t(std::numeric_limits<int64_t>::max()) ||
        (d != 0 && numel > std::numeric_limits<uint64_t>::max() / 8 / d)) {
      Fail(path, "tensor \"" + tensor + "\": shape " + shape.dump() + " overflows");
    }
    numel *= d;
    dims.push_back(static_cast<int64_t>(d));
  }
  return dims;
}

// One tensor entry of the header, checked against the data area of `data_size` bytes.
TensorView ParseTensor(const std::filesystem::path& path, const std::string& name,
                       const json& entry, const std::byte* data, uint64_t data_size) {
  if (!entry.is_object()) Fail(path, "tensor \"" + name + "\": entry is not an object");
  const json& dtype = Field(path, name, entry, "dtype", json::value_t::string, "a string");
  const json& shape = Field(path, name, entry, "shape", json::value_t::array, "a list");
  const auto offsets = entry.find("data_offsets");
  if (offsets == entry.end()) Fail(path, "tensor \"" + name + "\": missing \"data_offsets\"");
  if (!offsets->is_array() || offsets->size() != 2 || !(*offsets)[0].is_number_unsigned() ||
      !(*offsets)[1].is_number_unsigned()) {
    Fail(path, "tensor \"" + name + "\": \"data_offsets\" must be two non-negative integers, got " +
                   offsets->dump());
  }
  TensorView view;
  view.name = name;
  view.dtype = ParseDType(path, name, dtype.get<std::string>());
  uint64_t numel = 0;
  view.shape = ParseShape(path, name, shape, numel);
  const uint64_t begin = (*offsets)[0].get<uint64_t>();
  const uint64_t end = (*offsets)[1].get<uint64_t>();
  if (begin > end) {
    Fail(path, "tensor \"" + name + "\": data_offsets begin " + std::to_string(begin) + " > end " +
                   std::to_string(end));
  }
  if (end > data_size) {
    Fail(path, "tensor \"" + name + "\": data_offsets end " + std::to_string(end) +
                   " is past the data area (" + std::to_string(data_size) + " bytes)");
  }
  const uint64_t expected = numel * DTypeSize(view.dtype);
  if (end - begin != expected) {
    Fail(path, "tensor \"" + name + "\": " + std::to_string(end - begin) + " bytes for " +
                   DTypeName(view.dtype) + " shape " + shape.dump() + ", expected " +
                   std::to_string(expected));
  }
  view.bytes = std::span<const std::byte>(data + begin, end - begin);
  return view;
}

// No two tensors may share bytes: a crafted header could otherwise alias weights.
void CheckNoOverlap(const std::filesystem::path& path,
                    const std::map<std::string, TensorView>& tensors) {
  std::vector<const TensorView*> sorted;
  for (const auto& [name, view] : tensors) {
    if (!view.bytes.empty()) sorted.push_back(&view);
  }
  std::sort(sorted.begin(), sorted.end(), [](const TensorView* a, const TensorView* b) {
    return a->bytes.data() < b->bytes.data();
  });
  for (size_t i = 1; i < sorted.size(); ++i) {
    const TensorView* prev = sorted[i - 1];
    if (sorted[i]->bytes.data() < prev->bytes.data() + prev->bytes.size()) {
      Fail(path, "tensors \"" + prev->name + "\" and \"" + sorted[i]->name + "\" overlap");
    }
  }
}

std::string FormatShape(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i)
    s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

// model.safetensors.index.json: its "weight_map" sends each tensor to a shard file that lies
// next to the index.
std::map<std::string, std::string> ReadWeightMap(const std::filesystem::path& index_path) {
  std::ifstream in(index_path, std::ios::binary);
  if (!in) Fail(index_path, std::string("cannot open: ") + std::strerror(errno));
  const json index = json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (index.is_discarded() || !index.is_object()) Fail(index_path, "not a valid JSON object");
  const auto weight_map = index.find("weight_map");
  if (weight_map == index.end() || !weight_map->is_object()) {
    Fail(index_path, "missing \"weight_map\" object");
  }
  if (weight_map->empty()) Fail(index_path, "\"weight_map\" is empty");
  std::map<std::string, std::string> shard_of;
  for (const auto& item : weight_map->items()) {
    const std::string& tensor = item.key();
    if (!item.value().is_string()) {
      Fail(index_path, "\"weight_map\" entry for tensor \"" + tensor + "\" must be a string, got " +
                           item.value().dump());
    }
    const std::string shard = item.value().get<std::string>();
    if (shard.empty() || shard == "." || shard == ".." || shard.find('/') != std::string::npos) {
      Fail(index_path, "tensor \"" + tensor + "\": shard \"" + shard +
                           "\" must be a file name in the same directory");
    }
    shard_of[tensor] = shard;
  }
  return shard_of;
}

}  // namespace

std::string DTypeName(DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return "F32";
    case DType::kF16:
      return "F16";
    case DType::kBF16:
      return "BF16";
  }
  return "?";
}

size_t DTypeSize(DType dtype) {
  return dtype == DType::kF32 ? 4 : 2;
}

int64_t TensorView::numel() const {
  int64_t n = 1;
  for (int64_t d : shape)
    n *= d;
  return n;
}

std::vector<float> TensorView::ToFloat32() const {
  const size_t n = static_cast<size_t>(numel());
  // Views are plain structs; one built by hand must still not read past its bytes.
  if (bytes.size() != n * DTypeSize(dtype)) {
    throw WeightsError("tensor \"" + name + "\": " + std::to_string(bytes.size()) +
                       " bytes do not hold " + std::to_string(n) + " " + DTypeName(dtype) +
                       " elements");
  }
  std::vector<float> out(n);
  if (n == 0) return out;  // an empty view may have no data pointer at all
  switch (dtype) {
    case DType::kF32:
      std::memcpy(out.data(), bytes.data(), n * 4);
      break;
    case DType::kF16:
      for (size_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, bytes.data() + 2 * i, 2);
        out[i] = HalfToFloat(h);
      }
      break;
    case DType::kBF16:
      for (size_t i = 0; i < n; ++i) {
        uint16_t b;
        std::memcpy(&b, bytes.data() + 2 * i, 2);
        out[i] = std::bit_cast<float>(uint32_t(b) << 16);  // bf16 is the top half of an f32
      }
      break;
  }
  return out;
}

std::unique_ptr<SafetensorsFile> SafetensorsFile::Open(const std::filesystem::path& path) {
  std::unique_ptr<SafetensorsFile> file(new SafetensorsFile());
  file->path_ = path;
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) Fail(path, std::string("cannot open: ") + std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    ::close(fd);
    Fail(path, std::string("cannot stat: ") + std::strerror(errno));
  }
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  if (size < 8) {
    ::close(fd);
    Fail(path, "file is " + std::to_string(size) + " bytes, shorter than the 8-byte header size");
  }
  void* mapping = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  if (mapping == MAP_FAILED) Fail(path, std::string("cannot mmap: ") + std::strerror(errno));
  file->mapping_ = mapping;
  file->mapping_size_ = size;

  const auto* base = static_cast<const std::byte*>(mapping);
  uint64_t header_size = 0;
  std::memcpy(&header_size, base, 8);  // little-endian, as x86-64 and the format both are
  if (header_size > size - 8) {
    Fail(path, "header length " + std::to_string(header_size) + " is past the end of the file (" +
                   std::to_string(size) + " bytes)");
  }
  if (header_size > kMaxHeaderBytes) {
    Fail(path, "header length " + std::to_string(header_size) + " is absurd (limit " +
                   std::to_string(kMaxHeaderBytes) + " bytes)");
  }
  const std::string_view header_text(reinterpret_cast<const char*>(base + 8), header_size);
  const json header = json::parse(header_text, nullptr, /*allow_exceptions=*/false);
  if (header.is_discarded()) Fail(path, "header is not valid JSON");
  if (!header.is_object()) Fail(path, "header is not a JSON object");

  const std::byte* data = base + 8 + header_size;
  const uint64_t data_size = size - 8 - header_size;
  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") {
      if (!entry.is_object()) Fail(path, "\"__metadata__\" is not an object");
      for (const auto& [key, value] : entry.items()) {
        if (!value.is_string()) Fail(path, "\"__metadata__\"." + key + " is not a string");
        file->metadata_[key] = value.get<std::string>();
      }
      continue;
    }
    file->tensors_[name] = ParseTensor(path, name, entry, data, data_size);
  }
  CheckNoOverlap(path, file->tensors_);
  return file;
}

SafetensorsFile::~SafetensorsFile() {
  if (mapping_ != nullptr) ::munmap(mapping_, mapping_size_);
}

Checkpoint Checkpoint::Open(const std::filesystem::path& model_dir) {
  Checkpoint checkpoint;
  checkpoint.dir_ = model_dir;
  const std::filesystem::path index_path = model_dir / "model.safetensors.index.json";
  const std::filesystem::path single_path = model_dir / "model.safetensors";
  auto add_file = [&](const std::filesystem::path& path) {
    auto file = std::shared_ptr<SafetensorsFile>(SafetensorsFile::Open(path));
    for (const auto& [name, view] : file->tensors()) {
      const auto [it, added] = checkpoint.index_.emplace(name, &view);
      if (!added) {
        Fail(path, "tensor \"" + name + "\" is also in " +
                       checkpoint.FileOf(it->second)->path().filename().string());
      }
    }
    checkpoint.files_.push_back(std::move(file));
  };

  if (std::filesystem::exists(index_path)) {
    const std::map<std::string, std::string> shard_of = ReadWeightMap(index_path);
    std::set<std::string> shards;
    for (const auto& [tensor, shard] : shard_of)
      shards.insert(shard);
    for (const std::string& shard : shards)
      add_file(model_dir / shard);
    for (const auto& [tensor, shard] : shard_of) {
      const auto it = checkpoint.index_.find(tensor);
      if (it == checkpoint.index_.end() ||
          checkpoint.FileOf(it->second)->path().filename() != shard) {
        Fail(index_path, "tensor \"" + tensor + "\" is not in its shard " + shard);
      }
    }
  } else if (std::filesystem::exists(single_path)) {
    add_file(single_path);
  } else {
    throw WeightsError(model_dir.string() +
                       ": neither model.safetensors nor model.safetensors.index.json exists");
  }
  return checkpoint;
}

const SafetensorsFile* Checkpoint::FileOf(const TensorView* view) const {
  for (const auto& file : files_) {
    const auto it = file->tensors().find(view->name);
    if (it != file->tensors().end() && &it->second == view) return file.get();
  }
  return nullptr;
}

bool Checkpoint::Has(const std::string& name) const {
  return index_.contains(name);
}

const TensorView& Checkpoint::Get(const std::string& name) const {
  const auto it = index_.find(name);
  if (it == index_.end())
    throw WeightsError(dir_.string() + ": checkpoint has no tensor \"" + name + "\"");
  return *it->second;
}

const TensorView& Checkpoint::Get(const std::string& name,
                                  const std::vector<int64_t>& shape) const {
  const TensorView& view = Get(name);
  if (view.shape != shape) {
    throw WeightsError(dir_.string() + ": tensor \"" + name + "\" has shape " +
                       FormatShape(view.shape) + ", expected " + FormatShape(shape));
  }
  return view;
}

std::vector<std::string> Checkpoint::Names() const {
  std::vector<std::string> names;
  for (const auto& [name, view] : index_)
    names.push_back(name);
  return names;
}

}  // namespace gistmem::model
