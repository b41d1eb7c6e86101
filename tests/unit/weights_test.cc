// Safetensors loading: single files and sharded checkpoints, exact F16/BF16 widening, and a
// named error for every way a header can lie about its data.
#include "model/weights.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <bit>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <span>
#include <string>
#include <vector>

namespace gistmem::model {
namespace {

using nlohmann::json;
using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

// A tensor to write: raw little-endian element bytes.
struct TensorSpec {
  std::string name;
  std::string dtype;
  std::vector<int64_t> shape;
  std::string bytes;
};

std::string LittleEndianU64(uint64_t value) {
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i)
    out[i] = static_cast<char>((value >> (8 * i)) & 0xff);
  return out;
}

// Length prefix, header text, data area: the whole file.
std::string FileBytes(const std::string& header_text, const std::string& data) {
  return LittleEndianU64(header_text.size()) + header_text + data;
}

// A well-formed file holding `tensors` back to back.
std::string Safetensors(const std::vector<TensorSpec>& tensors, const json& metadata = nullptr) {
  json header = json::object();
  std::string data;
  for (const TensorSpec& t : tensors) {
    header[t.name] = {{"dtype", t.dtype},
                      {"shape", t.shape},
                      {"data_offsets", {data.size(), data.size() + t.bytes.size()}}};
    data += t.bytes;
  }
  if (!metadata.is_null()) header["__metadata__"] = metadata;
  return FileBytes(header.dump(), data);
}

template <typename T>
std::string Bytes(const std::vector<T>& values) {
  std::string out(values.size() * sizeof(T), '\0');
  std::memcpy(out.data(), values.data(), out.size());
  return out;
}

class WeightsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("gistmem_weights_test_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::filesystem::path Write(const std::string& name, const std::string& content) {
    const std::filesystem::path path = dir_ / name;
    std::ofstream(path, std::ios::binary) << content;
    return path;
  }

  // The WeightsError message of opening `content` as a file, or "" when it opens.
  std::string OpenError(const std::string& content) {
    const std::filesystem::path path = Write("bad.safetensors", content);
    try {
      SafetensorsFile::Open(path);
    } catch (const WeightsError& e) {
      EXPECT_THAT(e.what(), HasSubstr(path.string())) << "message names the file";
      return e.what();
    }
    return "";
  }

  // Opening a file whose header has the single entry `entry` under "w", over `data`.
  std::string EntryError(const json& entry, const std::string& data = std::string(16, '\0')) {
    return OpenError(FileBytes(json{{"w", entry}}.dump(), data));
  }

  std::string CheckpointError() {
    try {
      Checkpoint::Open(dir_);
    } catch (const WeightsError& e) {
      return e.what();
    }
    return "";
  }

  std::filesystem::path dir_;
};

TEST_F(WeightsTest, OpensASingleFileWithMetadata) {
  const std::vector<float> values = {1.5f, -2.25f, 0.0f, 3.0e-7f, 1e30f, -0.5f};
  const auto path =
      Write("one.safetensors", Safetensors({{"a.weight", "F32", {2, 3}, Bytes(values)},
                                            {"empty", "F32", {0, 4}, ""},
                                            {"scalar", "F32", {}, Bytes<float>({7})}},
                                           {{"format", "pt"}, {"note", "x"}}));
  const auto file = SafetensorsFile::Open(path);
  EXPECT_EQ(file->path(), path);
  EXPECT_EQ(file->metadata(),
            (std::map<std::string, std::string>{{"format", "pt"}, {"note", "x"}}));
  ASSERT_EQ(file->tensors().size(), 3u);
  const TensorView& a = file->tensors().at("a.weight");
  EXPECT_EQ(a.name, "a.weight");
  EXPECT_EQ(a.dtype, DType::kF32);
  EXPECT_THAT(a.shape, ElementsAre(2, 3));
  EXPECT_EQ(a.numel(), 6);
  EXPECT_EQ(a.bytes.size(), 24u);
  EXPECT_EQ(a.ToFloat32(), values);
  EXPECT_EQ(file->tensors().at("empty").numel(), 0);
  EXPECT_TRUE(file->tensors().at("empty").ToFloat32().empty());
  EXPECT_EQ(file->tensors().at("scalar").numel(), 1);
  EXPECT_THAT(file->tensors().at("scalar").ToFloat32(), ElementsAre(7.0f));
}

TEST_F(WeightsTest, DTypeNamesAndSizes) {
  EXPECT_EQ(DTypeName(DType::kF32), "F32");
  EXPECT_EQ(DTypeName(DType::kF16), "F16");
  EXPECT_EQ(DTypeName(DType::kBF16), "BF16");
  EXPECT_EQ(DTypeSize(DType::kF32), 4u);
  EXPECT_EQ(DTypeSize(DType::kF16), 2u);
  EXPECT_EQ(DTypeSize(DType::kBF16), 2u);
}

TEST_F(WeightsTest, WidensF16Exactly) {
  const std::vector<uint16_t> halves = {
      0x3c00,  // 1
      0xc000,  // -2
      0x3555,  // (1 + 341/1024) / 4, the nearest half to 1/3
      0x7bff,  // 65504, the largest finite half
      0x0400,  // 2^-14, the smallest normal
      0x03ff,  // 1023 * 2^-24, the largest subnormal
      0x0200,  // 2^-15, a subnormal
      0x0001,  // 2^-24, the smallest subnormal
      0x8001,  // -2^-24
      0x0000,  // +0
      0x8000,  // -0
      0x7c00,  // +inf
      0xfc00,  // -inf
      0x7e00,  // quiet nan
      0x7c01,  // signalling nan
  };
  const auto path = Write("f16.safetensors",
                          Safetensors({{"h", "F16", {int64_t(halves.size())}, Bytes(halves)}}));
  const std::vector<float> f = SafetensorsFile::Open(path)->tensors().at("h").ToFloat32();
  ASSERT_EQ(f.size(), halves.size());
  EXPECT_EQ(f[0], 1.0f);
  EXPECT_EQ(f[1], -2.0f);
  EXPECT_EQ(f[2], (1.0f + 341.0f / 1024.0f) / 4.0f);
  EXPECT_EQ(f[3], 65504.0f);
  EXPECT_EQ(f[4], std::ldexp(1.0f, -14));
  EXPECT_EQ(f[5], std::ldexp(1023.0f, -24));
  EXPECT_EQ(f[6], std::ldexp(1.0f, -15));
  EXPECT_EQ(f[7], std::ldexp(1.0f, -24));
  EXPECT_EQ(f[8], -std::ldexp(1.0f, -24));
  EXPECT_EQ(std::bit_cast<uint32_t>(f[9]), 0x00000000u);
  EXPECT_EQ(std::bit_cast<uint32_t>(f[10]), 0x80000000u);
  EXPECT_EQ(f[11], std::numeric_limits<float>::infinity());
  EXPECT_EQ(f[12], -std::numeric_limits<float>::infinity());
  EXPECT_TRUE(std::isnan(f[13]));
  EXPECT_TRUE(std::isnan(f[14]));
}

TEST_F(WeightsTest, WidensBF16Exactly) {
  const std::vector<uint16_t> bfloats = {
      0x3f80,  // 1
      0xc000,  // -2
      0x3eab,  // 0.333984375
      0x7f7f,  // the largest finite bf16
      0x0080,  // 2^-126, the smallest normal
      0x0001,  // 2^-133, the smallest subnormal
      0x8000,  // -0
      0x7f80,  // +inf
      0xff80,  // -inf
      0x7fc0,  // nan
  };
  const auto path =
      Write("bf16.safetensors",
            Safetensors({{"b", "BF16", {2, int64_t(bfloats.size() / 2)}, Bytes(bfloats)}}));
  const auto file = SafetensorsFile::Open(path);
  const TensorView& view = file->tensors().at("b");
  EXPECT_EQ(view.dtype, DType::kBF16);
  const std::vector<float> f = view.ToFloat32();
  ASSERT_EQ(f.size(), bfloats.size());
  EXPECT_EQ(f[0], 1.0f);
  EXPECT_EQ(f[1], -2.0f);
  EXPECT_EQ(f[2], 0.333984375f);
  EXPECT_EQ(f[3], std::ldexp(255.0f, 127 - 7));  // (2 - 2^-7) * 2^127
  EXPECT_EQ(f[4], std::ldexp(1.0f, -126));
  EXPECT_EQ(f[5], std::ldexp(1.0f, -133));
  EXPECT_EQ(std::bit_cast<uint32_t>(f[6]), 0x80000000u);
  EXPECT_EQ(f[7], std::numeric_limits<float>::infinity());
  EXPECT_EQ(f[8], -std::numeric_limits<float>::infinity());
  EXPECT_TRUE(std::isnan(f[9]));
}

TEST_F(WeightsTest, ToFloat32RejectsAViewWhoseBytesDoNotMatchItsShape) {
  const std::vector<float> values = {1, 2, 3};
  TensorView view;
  view.name = "hand_made";
  view.shape = {4};
  view.bytes = std::as_bytes(std::span(values));
  try {
    view.ToFloat32();
    ADD_FAILURE() << "expected a WeightsError";
  } catch (const WeightsError& e) {
    EXPECT_THAT(e.what(), HasSubstr("tensor \"hand_made\": 12 bytes do not hold 4 F32 elements"));
  }
}

TEST_F(WeightsTest, RejectsAFileShorterThanTheLengthPrefix) {
  EXPECT_THAT(OpenError(std::string("\x05\0\0\0\0", 5)),
              HasSubstr("shorter than the 8-byte header size"));
  EXPECT_THAT(OpenError(""), HasSubstr("file is 0 bytes"));
}

TEST_F(WeightsTest, RejectsAHeaderLengthPastTheEnd) {
  EXPECT_THAT(OpenError(LittleEndianU64(1000) + "{}"),
              HasSubstr("header length 1000 is past the end of the file (10 bytes)"));
  EXPECT_THAT(OpenError(LittleEndianU64(~0ull) + "{}"), HasSubstr("is past the end of the file"));
}

TEST_F(WeightsTest, RejectsAnAbsurdHeaderLength) {
  // A sparse file large enough to hold the claimed header: the size limit, not the end of the
  // file, must stop it.
  const uint64_t header_size = (100ull << 20) + 1;
  const auto path = Write("huge.safetensors", LittleEndianU64(header_size));
  std::filesystem::resize_file(path, 8 + header_size);
  try {
    SafetensorsFile::Open(path);
    ADD_FAILURE() << "expected a WeightsError";
  } catch (const WeightsError& e) {
    EXPECT_THAT(e.what(),
                AllOf(HasSubstr(path.string()), HasSubstr("header length 104857601 is absurd")));
  }
}

TEST_F(WeightsTest, RejectsAHeaderThatIsNotAJsonObject) {
  EXPECT_THAT(OpenError(FileBytes("{\"w\": ", "")), HasSubstr("header is not valid JSON"));
  EXPECT_THAT(OpenError(FileBytes("[1, 2]", "")), HasSubstr("header is not a JSON object"));
}

TEST_F(WeightsTest, RejectsMissingOrWrongTypedFields) {
  const json good = {{"dtype", "F32"}, {"shape", {4}}, {"data_offsets", {0, 16}}};
  EXPECT_EQ(EntryError(good), "");

  json entry = good;
  entry.erase("dtype");
  EXPECT_THAT(EntryError(entry), HasSubstr("tensor \"w\": missing \"dtype\""));
  entry = good;
  entry["dtype"] = 5;
  EXPECT_THAT(EntryError(entry), HasSubstr("tensor \"w\": \"dtype\" must be a string, got 5"));
  entry = good;
  entry.erase("shape");
  EXPECT_THAT(EntryError(entry), HasSubstr("tensor \"w\": missing \"shape\""));
  entry = good;
  entry["shape"] = 4;
  EXPECT_THAT(EntryError(entry), HasSubstr("tensor \"w\": \"shape\" must be a list, got 4"));
  entry = good;
  entry.erase("data_offsets");
  EXPECT_THAT(EntryError(entry), HasSubstr("tensor \"w\": missing \"data_offsets\""));
  for (const json& offsets : {json{0}, json{0, 16, 32}, json{"0", 16}, json{-4, 16}, json(0)}) {
    entry = good;
    entry["data_offsets"] = offsets;
    EXPECT_THAT(EntryError(entry), HasSubstr("tensor \"w\": \"data_offsets\" must be two "
                                             "non-negative integers, got " +
                                             offsets.dump()));
  }
  EXPECT_THAT(EntryError("F32"), HasSubstr("tensor \"w\": entry is not an object"));
}

TEST_F(WeightsTest, RejectsUnsupportedDTypes) {
  for (const char* dtype : {"I64", "F64", "I8", "F8_E4M3"}) {
    const json entry = {{"dtype", dtype}, {"shape", {2}}, {"data_offsets", {0, 16}}};
    EXPECT_THAT(EntryError(entry), HasSubstr(std::string("tensor \"w\": dtype ") + dtype +
                                             " is not supported for weights"));
  }
}

TEST_F(WeightsTest, RejectsBadDimensions) {
  json entry = {{"dtype", "F32"}, {"shape", {-1, 4}}, {"data_offsets", {0, 16}}};
  EXPECT_THAT(EntryError(entry), HasSubstr("tensor \"w\": shape [-1,4] has a negative dimension"));
  entry["shape"] = {2.5};
  EXPECT_THAT(EntryError(entry), HasSubstr("tensor \"w\": shape [2.5] has a non-integer"));
  entry["shape"] = {1ull << 40, 1ull << 40};
  EXPECT_THAT(EntryError(entry), HasSubstr("tensor \"w\": shape [1099511627776,1099511627776] "
                                           "overflows"));
  entry["shape"] = {std::numeric_limits<uint64_t>::max()};
  EXPECT_THAT(EntryError(entry), HasSubstr("overflows"));
}

TEST_F(WeightsTest, RejectsBadOffsets) {
  json entry = {{"dtype", "F32"}, {"shape", {2}}, {"data_offsets", {8, 0}}};
  EXPECT_THAT(EntryError(entry), HasSubstr("tensor \"w\": data_offsets begin 8 > end 0"));
  entry["data_offsets"] = {8, 24};
  EXPECT_THAT(EntryError(entry), HasSubstr("tensor \"w\": data_offsets end 24 is past the data "
                                           "area (16 bytes)"));
  entry["data_offsets"] = {0, 12};
  EXPECT_THAT(EntryError(entry), HasSubstr("tensor \"w\": 12 bytes for F32 shape [2], expected 8"));
}

TEST_F(WeightsTest, RejectsOverlappingTensors) {
  const json header = {
      {"a", {{"dtype", "F32"}, {"shape", {2}}, {"data_offsets", {0, 8}}}},
      {"b", {{"dtype", "F16"}, {"shape", {4}}, {"data_offsets", {4, 12}}}},
  };
  EXPECT_THAT(OpenError(FileBytes(header.dump(), std::string(16, '\0'))),
              HasSubstr("tensors \"a\" and \"b\" overlap"));
}

TEST_F(WeightsTest, RejectsBadMetadata) {
  json header = {{"__metadata__", {{"format", 1}}}};
  EXPECT_THAT(OpenError(FileBytes(header.dump(), "")),
              HasSubstr("\"__metadata__\".format is not a string"));
  header = {{"__metadata__", "pt"}};
  EXPECT_THAT(OpenError(FileBytes(header.dump(), "")),
              HasSubstr("\"__metadata__\" is not an object"));
}

TEST_F(WeightsTest, CheckpointFromASingleFile) {
  Write("model.safetensors", Safetensors({{"x", "F32", {2, 2}, Bytes<float>({1, 2, 3, 4})},
                                          {"y", "BF16", {1}, Bytes<uint16_t>({0x4040})}}));
  const Checkpoint ckpt = Checkpoint::Open(dir_);
  EXPECT_THAT(ckpt.Names(), ElementsAre("x", "y"));
  EXPECT_TRUE(ckpt.Has("x"));
  EXPECT_FALSE(ckpt.Has("z"));
  EXPECT_THAT(ckpt.Get("x", {2, 2}).ToFloat32(), ElementsAre(1, 2, 3, 4));
  EXPECT_THAT(ckpt.Get("y").ToFloat32(), ElementsAre(3.0f));
  try {
    ckpt.Get("z");
    ADD_FAILURE() << "expected a WeightsError";
  } catch (const WeightsError& e) {
    EXPECT_THAT(e.what(), HasSubstr("no tensor \"z\""));
  }
  try {
    ckpt.Get("x", {4});
    ADD_FAILURE() << "expected a WeightsError";
  } catch (const WeightsError& e) {
    EXPECT_THAT(e.what(), HasSubstr("tensor \"x\" has shape [2, 2], expected [4]"));
  }
}

TEST_F(WeightsTest, CheckpointFromShards) {
  Write("model-00001-of-00002.safetensors",
        Safetensors(
            {{"a", "F32", {1}, Bytes<float>({1})}, {"b", "F16", {1}, Bytes<uint16_t>({0x4000})}}));
  Write("model-00002-of-00002.safetensors", Safetensors({{"c", "F32", {2}, Bytes<float>({5, 6})}}));
  // A stray single-file checkpoint must not be read when an index exists.
  Write("model.safetensors", Safetensors({{"stale", "F32", {1}, Bytes<float>({0})}}));
  const json index = {{"metadata", {{"total_size", 14}}},
                      {"weight_map",
                       {{"a", "model-00001-of-00002.safetensors"},
                        {"b", "model-00001-of-00002.safetensors"},
                        {"c", "model-00002-of-00002.safetensors"}}}};
  Write("model.safetensors.index.json", index.dump());
  const Checkpoint ckpt = Checkpoint::Open(dir_);
  EXPECT_THAT(ckpt.Names(), ElementsAre("a", "b", "c"));
  EXPECT_THAT(ckpt.Get("a", {1}).ToFloat32(), ElementsAre(1.0f));
  EXPECT_THAT(ckpt.Get("b", {1}).ToFloat32(), ElementsAre(2.0f));
  EXPECT_THAT(ckpt.Get("c", {2}).ToFloat32(), ElementsAre(5.0f, 6.0f));
  EXPECT_FALSE(ckpt.Has("stale"));
}

TEST_F(WeightsTest, RejectsAnIndexThatMapsATensorToTheWrongShard) {
  Write("s1.safetensors", Safetensors({{"a", "F32", {1}, Bytes<float>({1})}}));
  Write("s2.safetensors", Safetensors({{"b", "F32", {1}, Bytes<float>({2})}}));
  Write("model.safetensors.index.json",
        json{{"weight_map",
              {{"a", "s1.safetensors"}, {"b", "s1.safetensors"}, {"c", "s2.safetensors"}}}}
            .dump());
  EXPECT_THAT(CheckpointError(), AllOf(HasSubstr("model.safetensors.index.json"),
                                       HasSubstr("tensor \"b\" is not in its shard "
                                                 "s1.safetensors")));
  Write("model.safetensors.index.json",
        json{{"weight_map", {{"a", "s1.safetensors"}, {"c", "s2.safetensors"}}}}.dump());
  EXPECT_THAT(CheckpointError(), HasSubstr("tensor \"c\" is not in its shard s2.safetensors"));
}

TEST_F(WeightsTest, RejectsAnIndexNamingAMissingShard) {
  Write("model.safetensors.index.json", json{{"weight_map", {{"a", "gone.safetensors"}}}}.dump());
  EXPECT_THAT(CheckpointError(), AllOf(HasSubstr("gone.safetensors"), HasSubstr("cannot open")));
}

TEST_F(WeightsTest, RejectsATensorInTwoShards) {
  Write("s1.safetensors", Safetensors({{"a", "F32", {1}, Bytes<float>({1})}}));
  Write("s2.safetensors", Safetensors({{"a", "F32", {1}, Bytes<float>({2})}}));
  Write("model.safetensors.index.json",
        json{{"weight_map", {{"a", "s1.safetensors"}, {"x", "s2.safetensors"}}}}.dump());
  EXPECT_THAT(CheckpointError(), AllOf(HasSubstr("s2.safetensors"),
                                       HasSubstr("tensor \"a\" is also in s1.safetensors")));
}

TEST_F(WeightsTest, RejectsMalformedIndexes) {
  Write("model.safetensors.index.json", "{not json");
  EXPECT_THAT(CheckpointError(), HasSubstr("not a valid JSON object"));
  Write("model.safetensors.index.json", json{{"metadata", json::object()}}.dump());
  EXPECT_THAT(CheckpointError(), HasSubstr("missing \"weight_map\" object"));
  Write("model.safetensors.index.json", json{{"weight_map", json::object()}}.dump());
  EXPECT_THAT(CheckpointError(), HasSubstr("\"weight_map\" is empty"));
  Write("model.safetensors.index.json", json{{"weight_map", {{"a", 3}}}}.dump());
  EXPECT_THAT(CheckpointError(),
              HasSubstr("\"weight_map\" entry for tensor \"a\" must be a string, got 3"));
  for (const char* shard : {"../model.safetensors", "sub/x.safetensors", "..", ""}) {
    Write("model.safetensors.index.json", json{{"weight_map", {{"a", shard}}}}.dump());
    EXPECT_THAT(CheckpointError(), HasSubstr(std::string("tensor \"a\": shard \"") + shard +
                                             "\" must be a file name in the same directory"));
  }
}

TEST_F(WeightsTest, RejectsADirectoryWithoutWeights) {
  EXPECT_THAT(CheckpointError(),
              AllOf(HasSubstr(dir_.string()), HasSubstr("neither model.safetensors nor "
                                                        "model.safetensors.index.json exists")));
}

TEST_F(WeightsTest, ReportsAFileErrorFromACheckpoint) {
  Write("model.safetensors", "short");
  EXPECT_THAT(CheckpointError(), AllOf(HasSubstr((dir_ / "model.safetensors").string()),
                                       HasSubstr("shorter than the 8-byte header size")));
}

// Checkpoints that transformers' save_pretrained wrote (one sharded, three dtypes).
TEST(WeightsFixtureTest, OpensTheFixtureCheckpoints) {
  const std::filesystem::path models =
      std::filesystem::path(GISTMEM_SOURCE_DIR) / "tests/fixtures/models";
  const Checkpoint llama = Checkpoint::Open(models / "llama-gqa-bf16");
  EXPECT_EQ(llama.Get("model.embed_tokens.weight", {512, 64}).dtype, DType::kBF16);
  EXPECT_EQ(llama.Get("model.layers.1.self_attn.k_proj.weight", {32, 64}).dtype, DType::kBF16);
  const Checkpoint qwen = Checkpoint::Open(models / "qwen2-tied-f32");
  EXPECT_EQ(qwen.Get("model.layers.0.self_attn.q_proj.bias", {64}).dtype, DType::kF32);
  const Checkpoint mistral = Checkpoint::Open(models / "mistral-window-f16");
  const TensorView& norm = mistral.Get("model.norm.weight", {64});
  EXPECT_EQ(norm.dtype, DType::kF16);
  for (float v : norm.ToFloat32())
    EXPECT_TRUE(std::isfinite(v));
}

}  // namespace
}  // namespace gistmem::model
