#include "io/safetensors.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "core/error.h"
#include "test_util.h"

namespace dlx {

namespace {

// Writes a safetensors file from a raw header string and `data_bytes` bytes of data.
void write_raw(const std::string& path, const std::string& header, size_t data_bytes, int64_t claimed_len = -1) {
  std::ofstream f(path, std::ios::binary);
  uint64_t n = claimed_len >= 0 ? uint64_t(claimed_len) : header.size();
  for (int i = 0; i < 8; ++i) f.put(char((n >> (8 * i)) & 0xff));
  f << header;
  f << std::string(data_bytes, '\x01');
}

std::string error_of(const std::string& path) {
  try {
    SafetensorsFile f(path);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST(Safetensors, WriteReadRoundTrip) {
  test::TempDir dir;
  std::mt19937_64 rng(7);
  Tensor a = test::random_tensor(DType::BF16, {3, 5}, rng);
  Tensor b = Tensor::zeros(DType::I64, {4});
  for (int i = 0; i < 4; ++i) b.data<int64_t>()[i] = i * 1000000007LL;
  Tensor c = Tensor::zeros(DType::U8, {0});
  write_safetensors(dir / "x.safetensors", {{"a", a}, {"b", b}, {"empty", c}}, {{"format", "pt"}});
  SafetensorsFile f(dir / "x.safetensors");
  EXPECT_EQ(f.tensors().size(), 3u);
  EXPECT_EQ(f.metadata().at("format"), "pt");
  Tensor a2 = f.get("a");
  EXPECT_EQ(a2.dtype(), DType::BF16);
  EXPECT_EQ(a2.shape(), (Shape{3, 5}));
  EXPECT_EQ(std::memcmp(a2.data(), a.data(), a.nbytes()), 0);
  EXPECT_EQ(f.get("b").data<int64_t>()[3], 3 * 1000000007LL);
  EXPECT_EQ(f.get("empty").numel(), 0);
  // No temp file is left behind.
  int files = 0;
  for (auto& e : std::filesystem::directory_iterator(dir.str())) files += e.is_regular_file();
  EXPECT_EQ(files, 1);
}

// Releasing a file's pages (the quantizer does it after each layer) leaves views valid: their bytes come back
// from the file, and reading the same tensor again gives the same bytes.
TEST(Safetensors, ReleasedPagesReadBackTheSameBytes) {
  test::TempDir dir;
  std::mt19937_64 rng(8);
  Tensor a = test::random_tensor(DType::F32, {1 << 10, 1 << 9}, rng);  // 2 MB: whole pages to drop
  write_safetensors(dir / "x.safetensors", {{"a", a}});
  auto store = TensorStore::open_file(dir / "x.safetensors");
  Tensor view = store->get("a");
  ASSERT_EQ(std::memcmp(view.data(), a.data(), a.nbytes()), 0);
  store->release_pages();
  EXPECT_EQ(std::memcmp(view.data(), a.data(), a.nbytes()), 0);
  EXPECT_EQ(std::memcmp(store->get("a").data(), a.data(), a.nbytes()), 0);
}

TEST(Safetensors, MisalignedTensorIsReadThroughAnAlignedCopy) {
  test::TempDir dir;
  auto p = dir / "odd.safetensors";
  // A one-byte U8 tensor first puts the I64 tensor at data offset 1 (another writer's layout).
  std::string header = R"({"u": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]},
                           "i": {"dtype": "I64", "shape": [1], "data_offsets": [1, 9]}})";
  header.resize((header.size() + 7) / 8 * 8, ' ');
  std::ofstream f(p, std::ios::binary);
  uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) f.put(char((n >> (8 * i)) & 0xff));
  f << header;
  f.put(char(7));
  int64_t v = -123456789012345LL;
  f.write(reinterpret_cast<const char*>(&v), 8);
  f.close();
  SafetensorsFile sf(p);
  Tensor t = sf.get("i");
  EXPECT_EQ(reinterpret_cast<uintptr_t>(t.data()) % 8, 0u);
  EXPECT_EQ(t.data<int64_t>()[0], v);
}

TEST(Safetensors, RejectsCorruptFiles) {
  test::TempDir dir;
  auto p = dir / "bad.safetensors";
  std::ofstream(p) << "abc";
  EXPECT_NE(error_of(p).find("shorter than the 8-byte header"), std::string::npos) << error_of(p);

  write_raw(p, "{}", 0, 1000);
  EXPECT_NE(error_of(p).find("runs past the end of the file"), std::string::npos) << error_of(p);

  write_raw(p, "{not json", 0);
  EXPECT_NE(error_of(p).find("not valid JSON"), std::string::npos) << error_of(p);

  write_raw(p, R"({"w": {"dtype": "Q4", "shape": [2], "data_offsets": [0, 2]}})", 2);
  EXPECT_NE(error_of(p).find("tensor 'w': unsupported dtype 'Q4'"), std::string::npos) << error_of(p);

  write_raw(p, R"({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}})", 4);
  EXPECT_NE(error_of(p).find("tensor 'w': holds 4 bytes but dtype F32 shape [2] needs 8"), std::string::npos)
      << error_of(p);

  write_raw(p, R"({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}})", 4);  // truncated data
  EXPECT_NE(error_of(p).find("past the data area"), std::string::npos) << error_of(p);

  write_raw(p, R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                   "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}})", 12);
  EXPECT_NE(error_of(p).find("overlap"), std::string::npos) << error_of(p);

  write_raw(p, R"({"w": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}})", 8);
  EXPECT_NE(error_of(p).find("non-negative"), std::string::npos) << error_of(p);

  write_raw(p, R"({"w": {"dtype": "F32", "shape": [2]}})", 8);
  EXPECT_NE(error_of(p).find("data_offsets"), std::string::npos) << error_of(p);

  write_raw(p, R"({"w": {"dtype": "F32", "shape": [2], "data_offsets": [8, 0]}})", 8);
  EXPECT_NE(error_of(p).find("end before begin"), std::string::npos) << error_of(p);

  EXPECT_NE(error_of(dir / "missing.safetensors").find("cannot open"), std::string::npos);
}

TEST(Safetensors, ErrorsNameTheFile) {
  test::TempDir dir;
  auto p = dir / "named.safetensors";
  write_raw(p, "[]", 0);
  EXPECT_NE(error_of(p).find(p), std::string::npos);
}

TEST(Safetensors, ShardedDirectory) {
  test::TempDir dir;
  std::mt19937_64 rng(3);
  Tensor a = test::random_tensor(DType::F32, {4}, rng), b = test::random_tensor(DType::F16, {2, 2}, rng);
  write_safetensors(dir / "model-00001-of-00002.safetensors", {{"a", a}});
  write_safetensors(dir / "model-00002-of-00002.safetensors", {{"b", b}});
  std::ofstream(dir / "model.safetensors.index.json")
      << R"({"metadata": {}, "weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}})";
  auto store = TensorStore::open_dir(dir.str());
  EXPECT_TRUE(store->has("a"));
  EXPECT_TRUE(store->has("b"));
  EXPECT_EQ(store->get("b").dtype(), DType::F16);
  EXPECT_EQ(std::memcmp(store->get("a").data(), a.data(), a.nbytes()), 0);
  try {
    store->get("c");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("'c'"), std::string::npos);
  }

  // The index names a tensor its shard does not hold.
  std::ofstream(dir / "model.safetensors.index.json", std::ios::trunc)
      << R"({"weight_map": {"a": "model-00001-of-00002.safetensors", "z": "model-00001-of-00002.safetensors"}})";
  try {
    TensorStore::open_dir(dir.str());
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("tensor 'z' is listed in the index but missing"), std::string::npos) << e.what();
  }
  // The index names a shard that does not exist.
  std::ofstream(dir / "model.safetensors.index.json", std::ios::trunc)
      << R"({"weight_map": {"a": "model-00009-of-00009.safetensors"}})";
  EXPECT_THROW(TensorStore::open_dir(dir.str()), Error);
}

TEST(Safetensors, WriteFailureLeavesNoFile) {
  test::TempDir dir;
  std::string p = dir / "no_such_subdir/out.safetensors";
  EXPECT_THROW(write_safetensors(p, {{"a", Tensor::zeros(DType::F32, {1})}}), Error);
  EXPECT_FALSE(std::filesystem::exists(p));
}

}  // namespace dlx
