#include "io/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "core/error.h"
#include "core/json.h"
#include "core/log.h"

namespace dlx {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

constexpr uint64_t kMaxHeader = 100ull << 20;  // the format's own limit is 100 MB

TensorInfo parse_entry(const std::string& path, const std::string& name, const json& e, size_t data_size) {
  auto bad = [&](const std::string& why) { fail("{}: tensor '{}': {}", path, name, why); };
  if (!e.is_object()) bad("header entry is not an object");
  if (!e.contains("dtype") || !e["dtype"].is_string()) bad("missing or non-string 'dtype'");
  if (!e.contains("shape") || !e["shape"].is_array()) bad("missing or non-array 'shape'");
  if (!e.contains("data_offsets") || !e["data_offsets"].is_array() || e["data_offsets"].size() != 2)
    bad("'data_offsets' must be [begin, end]");
  TensorInfo ti;
  ti.name = name;
  std::string dt = e["dtype"].get<std::string>();
  if (!dtype_from_name(dt, &ti.dtype))
    bad("unsupported dtype '" + dt + "' (supported: BF16, F16, F32, F8_E4M3, I64, I32, I8, U8)");
  uint64_t numel = 1;
  for (const auto& d : e["shape"]) {
    if (!d.is_number_unsigned()) bad("shape entries must be non-negative integers");
    uint64_t v = d.get<uint64_t>();
    if (v > (1ull << 40) || (v && numel > (1ull << 48) / v)) bad("shape is implausibly large");
    numel *= v;
    ti.shape.push_back(int64_t(v));
  }
  for (const auto& o : e["data_offsets"])
    if (!o.is_number_unsigned()) bad("data_offsets must be non-negative integers");
  ti.begin = e["data_offsets"][0].get<uint64_t>();
  ti.end = e["data_offsets"][1].get<uint64_t>();
  if (ti.end < ti.begin) bad(fmt::format("data_offsets [{}, {}] end before begin", ti.begin, ti.end));
  if (ti.end > data_size)
    bad(fmt::format("data_offsets end {} is past the data area ({} bytes; file truncated?)", ti.end, data_size));
  uint64_t want = numel * dtype_size(ti.dtype);
  if (ti.end - ti.begin != want)
    bad(fmt::format("holds {} bytes but dtype {} shape {} needs {}", ti.end - ti.begin, dt, shape_str(ti.shape), want));
  return ti;
}

}  // namespace

SafetensorsFile::SafetensorsFile(const std::string& path) : path_(path) {
  int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) fail("{}: cannot open: {}", path, std::strerror(errno));
  struct stat st {};
  if (fstat(fd, &st) != 0) {
    ::close(fd);
    fail("{}: cannot stat", path);
  }
  size_ = size_t(st.st_size);
  if (size_ < 8) {
    ::close(fd);
    fail("{}: not a safetensors file ({} bytes, shorter than the 8-byte header length)", path, size_);
  }
  void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  if (p == MAP_FAILED) fail("{}: mmap failed: {}", path, std::strerror(errno));
  size_t sz = size_;
  map_ = std::shared_ptr<void>(p, [sz](void* q) { ::munmap(q, sz); });

  const auto* bytes = static_cast<const unsigned char*>(p);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | bytes[i];
  if (n > kMaxHeader) fail("{}: header length {} exceeds the 100 MB limit (not a safetensors file?)", path, n);
  if (8 + n > size_) fail("{}: header length {} runs past the end of the file ({} bytes; truncated?)", path, n, size_);
  data_start_ = 8 + n;
  // JSON lets a key repeat (the parser keeps the last): a tensor named twice is refused, not silently replaced.
  std::set<std::string> names;
  const json header = parse_json(std::string_view(reinterpret_cast<const char*>(bytes) + 8, n), path + ": header",
                                 [&](int depth, json::parse_event_t ev, json& parsed) {
                                   if (depth == 1 && ev == json::parse_event_t::key &&
                                       !names.insert(parsed.get<std::string>()).second)
                                     fail("{}: tensor '{}' appears twice in the header", path, parsed.get<std::string>());
                                   return true;
                                 });
  if (!header.is_object()) fail("{}: header is not a JSON object", path);
  size_t data_size = size_ - data_start_;
  for (auto it = header.begin(); it != header.end(); ++it) {
    if (it.key() == "__metadata__") {
      if (!it.value().is_object()) fail("{}: __metadata__ is not an object", path);
      for (auto m = it.value().begin(); m != it.value().end(); ++m)
        metadata_[m.key()] = m.value().is_string() ? m.value().get<std::string>() : m.value().dump();
      continue;
    }
    infos_[it.key()] = parse_entry(path, it.key(), it.value(), data_size);
  }
  // No two tensors may share bytes.
  std::vector<const TensorInfo*> order;
  for (const auto& [name, ti] : infos_)
    if (ti.end > ti.begin) order.push_back(&ti);
  std::sort(order.begin(), order.end(), [](auto a, auto b) { return a->begin < b->begin; });
  for (size_t i = 1; i < order.size(); ++i)
    if (order[i]->begin < order[i - 1]->end)
      fail("{}: tensors '{}' and '{}' overlap in the data area", path, order[i - 1]->name, order[i]->name);
}

SafetensorsFile::~SafetensorsFile() = default;

// A residency hint: if the kernel refuses it, the pages simply stay resident (nothing to report or undo).
void SafetensorsFile::release_pages() const { (void)::madvise(map_.get(), size_, MADV_DONTNEED); }

void TensorStore::release_pages() const {
  for (const auto& f : files_) f->release_pages();
}

Tensor SafetensorsFile::get(const std::string& name) const {
  auto it = infos_.find(name);
  if (it == infos_.end()) fail("{}: no tensor named '{}'", path_, name);
  char* base = static_cast<char*>(map_.get()) + data_start_ + it->second.begin;
  // Files from other writers may place a tensor at an offset that is not a multiple of its element size;
  // such a tensor is copied to aligned memory rather than read through a misaligned pointer.
  if (reinterpret_cast<uintptr_t>(base) % dtype_size(it->second.dtype) != 0)
    return Tensor::from_data(it->second.dtype, it->second.shape, base);
  return Tensor(it->second.dtype, it->second.shape, base, map_);
}

std::shared_ptr<TensorStore> TensorStore::open_file(const std::string& path) {
  auto store = std::make_shared<TensorStore>();
  store->files_.push_back(std::make_unique<SafetensorsFile>(path));
  for (const auto& [name, ti] : store->files_.back()->tensors()) store->where_[name] = store->files_.back().get();
  return store;
}

namespace {

// The original Diffulex quantizer wrote its quantized tensors to model_quantized_{gptq,awq}.safetensors next to the
// original weights (which stay for the layers it left dense). Returns those files in the directory.
std::vector<fs::path> seed_quantized_files(const fs::path& d) {
  std::vector<fs::path> found;
  for (const char* name : {"model_quantized_gptq.safetensors", "model_quantized_awq.safetensors"})
    if (fs::exists(d / name)) found.push_back(d / name);
  return found;
}

}  // namespace

std::shared_ptr<TensorStore> TensorStore::open_dir(const std::string& dir) {
  std::shared_ptr<TensorStore> store = open_base_dir(dir);
  // An overlay file that model.safetensors.index.json already maps (diffulex quantize's own output) is a shard.
  std::vector<fs::path> overlays;
  for (const fs::path& p : seed_quantized_files(dir)) {
    bool mapped = false;
    for (const auto& f : store->files_) mapped = mapped || fs::equivalent(f->path(), p);
    if (!mapped) overlays.push_back(p);
  }
  if (overlays.size() > 1)
    fail("{}: both {} and {} are present; keep the one to load (diffulex reads one quantized overlay)", dir,
         overlays[0].filename().string(), overlays[1].filename().string());
  for (const fs::path& p : overlays) {
    // The overlay's tensors join the store. A layer it quantizes (it holds `{layer}.qweight`) takes all its
    // tensors from the overlay: they replace the base's (e.g. the bias, rewritten as F16 by the quantizer). The
    // linear kinds try the packed kinds before the dense one, so the base's `{layer}.weight` is never read unless
    // a bf16 family is forced (as the original Diffulex loads the dense weights for its bf16 strategies). Any
    // other tensor the base also holds is refused.
    store->files_.push_back(std::make_unique<SafetensorsFile>(p.string()));
    const SafetensorsFile* ov = store->files_.back().get();
    std::set<std::string> layers;
    const std::string qw = ".qweight";
    for (const auto& [name, ti] : ov->tensors())
      if (name.size() > qw.size() && name.compare(name.size() - qw.size(), qw.size(), qw) == 0)
        layers.insert(name.substr(0, name.size() - qw.size()));
    for (const auto& [name, ti] : ov->tensors()) {
      auto it = store->where_.find(name);
      const size_t dot = name.rfind('.');
      if (it != store->where_.end() && !(dot != std::string::npos && layers.count(name.substr(0, dot))))
        fail("{}: tensor '{}' is also in {}; a quantized overlay may only add tensors or replace those of the "
             "layers it quantizes (layers with a '.qweight')",
             p.string(), name, it->second->path());
      store->where_[name] = ov;
    }
    int64_t dense = 0;
    for (const std::string& l : layers) dense += int64_t(store->where_.count(l + ".weight"));
    store->overlay_ = p.string();
    log_info("{}: {} overlays the checkpoint: {} quantized layers replace {} dense weights", dir,
             p.filename().string(), layers.size(), dense);
  }
  return store;
}

std::shared_ptr<TensorStore> TensorStore::open_base_dir(const std::string& dir) {
  fs::path d(dir);
  fs::path single = d / "model.safetensors";
  fs::path index = d / "model.safetensors.index.json";
  if (fs::exists(index)) {
    const json j = read_json_file(index.string());
    if (!j.contains("weight_map") || !j["weight_map"].is_object())
      fail("{}: missing 'weight_map' object", index.string());
    auto store = std::make_shared<TensorStore>();
    std::map<std::string, SafetensorsFile*> by_file;
    for (auto it = j["weight_map"].begin(); it != j["weight_map"].end(); ++it) {
      if (!it.value().is_string()) fail("{}: weight_map['{}'] is not a file name", index.string(), it.key());
      std::string shard = it.value().get<std::string>();
      if (shard.find('/') != std::string::npos || shard == "..")
        fail("{}: weight_map['{}'] names '{}', which is not a file in the directory", index.string(), it.key(), shard);
      auto f = by_file.find(shard);
      if (f == by_file.end()) {
        fs::path sp = d / shard;
        if (!fs::exists(sp)) fail("{}: shard '{}' (for tensor '{}') does not exist", index.string(), shard, it.key());
        store->files_.push_back(std::make_unique<SafetensorsFile>(sp.string()));
        f = by_file.emplace(shard, store->files_.back().get()).first;
      }
      if (!f->second->has(it.key()))
        fail("{}: tensor '{}' is listed in the index but missing from the shard", f->second->path(), it.key());
      store->where_[it.key()] = f->second;
    }
    return store;
  }
  if (fs::exists(single)) return open_file(single.string());
  if (!seed_quantized_files(d).empty())
    fail("{}: has a quantized overlay ({}) but no model.safetensors or model.safetensors.index.json with the other "
         "weights", dir, seed_quantized_files(d)[0].filename().string());
  fail("{}: no model.safetensors or model.safetensors.index.json", dir);
}

Tensor TensorStore::get(const std::string& name) const {
  auto it = where_.find(name);
  if (it == where_.end()) fail("checkpoint has no tensor named '{}'", name);
  return it->second->get(name);
}

const TensorInfo& TensorStore::info(const std::string& name) const {
  auto it = where_.find(name);
  if (it == where_.end()) fail("checkpoint has no tensor named '{}'", name);
  return it->second->tensors().at(name);
}

const std::string& TensorStore::file_of(const std::string& name) const {
  auto it = where_.find(name);
  if (it == where_.end()) fail("checkpoint has no tensor named '{}'", name);
  return it->second->path();
}

std::vector<std::string> TensorStore::names() const {
  std::vector<std::string> out;
  for (const auto& [n, f] : where_) out.push_back(n);
  return out;
}

namespace {

std::string temp_name(const std::string& path) {
  return path + ".tmp." + std::to_string(::getpid());
}

void write_all(FILE* f, const void* p, size_t n, const std::string& path) {
  if (n && std::fwrite(p, 1, n, f) != n) fail("{}: write failed: {}", path, std::strerror(errno));
}

// Writes via `body(FILE*)` to a temp file, then renames; the temp file is removed on any failure.
template <typename Body>
void atomic_write(const std::string& path, Body body) {
  std::string tmp = temp_name(path);
  FILE* f = std::fopen(tmp.c_str(), "wb");
  if (!f) fail("{}: cannot create: {}", tmp, std::strerror(errno));
  try {
    body(f);
    if (std::fflush(f) != 0 || fsync(fileno(f)) != 0) fail("{}: flush failed: {}", tmp, std::strerror(errno));
  } catch (...) {
    std::fclose(f);
    std::remove(tmp.c_str());
    throw;
  }
  if (std::fclose(f) != 0) {
    std::remove(tmp.c_str());
    fail("{}: close failed", tmp);
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    fail("{}: cannot rename temp file into place: {}", path, std::strerror(errno));
  }
}

}  // namespace

void write_file_atomic(const std::string& path, const std::string& contents) {
  atomic_write(path, [&](FILE* f) { write_all(f, contents.data(), contents.size(), path); });
}

void write_safetensors(const std::string& path, const std::vector<std::pair<std::string, Tensor>>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  json header = json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  // Data in order of decreasing element size: with the 8-aligned data area every tensor then starts at a
  // multiple of its element size, so readers can use it in place (the format allows no gaps for padding).
  std::vector<const std::pair<std::string, Tensor>*> order;
  for (const auto& e : tensors) order.push_back(&e);
  std::stable_sort(order.begin(), order.end(),
                   [](auto a, auto b) { return dtype_size(a->second.dtype()) > dtype_size(b->second.dtype()); });
  size_t offset = 0;
  for (const auto* e : order) {
    const auto& [name, t] = *e;
    check(t.device() == Device::CPU, "write_safetensors: tensor '{}' is not on the CPU", name);
    check(!header.contains(name), "write_safetensors: duplicate tensor name '{}'", name);
    header[name] = {{"dtype", dtype_name(t.dtype())}, {"shape", t.shape()}, {"data_offsets", {offset, offset + t.nbytes()}}};
    offset += t.nbytes();
  }
  std::string h = header.dump();
  h.resize((h.size() + 7) / 8 * 8, ' ');  // pad so the data area starts 8-byte aligned
  uint64_t n = h.size();
  unsigned char len[8];
  for (int i = 0; i < 8; ++i) len[i] = (n >> (8 * i)) & 0xff;
  atomic_write(path, [&](FILE* f) {
    write_all(f, len, 8, path);
    write_all(f, h.data(), h.size(), path);
    for (const auto* e : order) write_all(f, e->second.data(), e->second.nbytes(), path);
  });
}

}  // namespace dlx
