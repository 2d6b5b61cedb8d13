// safetensors files: a validated, mmap'd reader (single file or a sharded directory) and an atomic writer.
// Layout: u64 little-endian header length N, N bytes of JSON {name: {dtype, shape, data_offsets}}, data.
#pragma once
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace dlx {

struct TensorInfo {
  std::string name;
  DType dtype;
  Shape shape;
  size_t begin = 0, end = 0;  // byte offsets relative to the data area
};

// One mmap'd safetensors file. Every header entry is validated on open; tensors are zero-copy views.
class SafetensorsFile {
 public:
  explicit SafetensorsFile(const std::string& path);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return path_; }
  const std::map<std::string, TensorInfo>& tensors() const { return infos_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  bool has(const std::string& name) const { return infos_.count(name) != 0; }
  // A view into the mapping; the returned tensor keeps the mapping alive.
  Tensor get(const std::string& name) const;
  // Drops the mapping's pages from this process's resident memory (madvise MADV_DONTNEED). The mapping is
  // read-only, so its pages are never private copies: views stay valid and a later read faults the bytes back in
  // from the file (normally from the page cache). For readers that stream a large checkpoint once.
  void release_pages() const;

 private:
  std::string path_;
  std::shared_ptr<void> map_;  // the whole file, unmapped when the last view goes
  size_t size_ = 0;
  size_t data_start_ = 0;
  std::map<std::string, TensorInfo> infos_;
  std::map<std::string, std::string> metadata_;
};

// All tensors of a checkpoint directory: model.safetensors, or the shards named by
// model.safetensors.index.json (each name checked to be present in the shard the index names), plus Diffulex's
// quantized overlay model_quantized_{gptq,awq}.safetensors when present and not mapped by the index: it adds
// tensors, and for each layer it quantizes ('{layer}.qweight') replaces the layer's tensors; the layer then loads
// packed and its dense '{layer}.weight' stays unread unless bf16 is forced (docs/QUANTIZED_CHECKPOINTS.md).
class TensorStore {
 public:
  static std::shared_ptr<TensorStore> open_dir(const std::string& dir);
  static std::shared_ptr<TensorStore> open_file(const std::string& path);

  bool has(const std::string& name) const { return where_.count(name) != 0; }
  Tensor get(const std::string& name) const;  // throws Error naming the tensor when absent
  const TensorInfo& info(const std::string& name) const;
  std::vector<std::string> names() const;
  const std::string& file_of(const std::string& name) const;
  // The overlay file read over the base checkpoint, or "" when none.
  const std::string& overlay() const { return overlay_; }
  // SafetensorsFile::release_pages for every file.
  void release_pages() const;

 private:
  static std::shared_ptr<TensorStore> open_base_dir(const std::string& dir);  // without the overlay
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, const SafetensorsFile*> where_;
  std::string overlay_;
};

// Writes tensors (CPU, any dtype) to `path` via a temporary file in the same directory, renamed on success,
// so a crash or error never leaves a half-written file under the final name.
void write_safetensors(const std::string& path, const std::vector<std::pair<std::string, Tensor>>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

// Writes `contents` to `path` atomically (temp file + rename).
void write_file_atomic(const std::string& path, const std::string& contents);

}  // namespace dlx
