// Safetensors checkpoints: one file or several shards named by model.safetensors.index.json.
//
// Files are memory-mapped and validated on open (header bounds, JSON, dtype/shape vs byte
// size, offsets inside the data area and not overlapping). Tensors are read by name; the
// runtime converts them to the dtype its backend computes in.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

namespace gistmem::model {

enum class DType { kF32, kF16, kBF16 };

std::string DTypeName(DType dtype);
size_t DTypeSize(DType dtype);

// A read-only view of one tensor inside a mapped file.
struct TensorView {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  std::span<const std::byte> bytes;

  int64_t numel() const;
  // Converts (F16/BF16 widen exactly) into a new fp32 buffer.
  std::vector<float> ToFloat32() const;
};

class WeightsError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// One mapped .safetensors file.
class SafetensorsFile {
 public:
  static std::unique_ptr<SafetensorsFile> Open(const std::filesystem::path& path);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::map<std::string, TensorView>& tensors() const { return tensors_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const std::filesystem::path& path() const { return path_; }

 private:
  SafetensorsFile() = default;
  std::filesystem::path path_;
  void* mapping_ = nullptr;
  size_t mapping_size_ = 0;
  std::map<std::string, TensorView> tensors_;
  std::map<std::string, std::string> metadata_;
};

// All tensors of a checkpoint directory (model.safetensors, or the shards of an index).
class Checkpoint {
 public:
  static Checkpoint Open(const std::filesystem::path& model_dir);

  bool Has(const std::string& name) const;
  // Throws WeightsError naming the tensor when absent.
  const TensorView& Get(const std::string& name) const;
  // Get() plus a shape check; the error names the tensor, expected and found shapes.
  const TensorView& Get(const std::string& name, const std::vector<int64_t>& shape) const;
  std::vector<std::string> Names() const;

 private:
  const SafetensorsFile* FileOf(const TensorView* view) const;

  std::filesystem::path dir_;  // for messages
  std::vector<std::shared_ptr<SafetensorsFile>> files_;
  std::map<std::string, const TensorView*> index_;
};

}  // namespace gistmem::model
