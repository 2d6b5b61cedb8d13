#include "quant/checkpoint_writer.h"

#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <filesystem>

#include "core/error.h"
#include "core/log.h"
#include "io/safetensors.h"

namespace dlx {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

bool is_weight_file(const std::string& name) {
  auto ends = [&](const std::string& s) { return name.size() >= s.size() && name.compare(name.size() - s.size(), s.size(), s) == 0; };
  return ends(".safetensors") || ends(".bin") || ends(".pt") || ends(".pth") || ends(".ckpt") || ends(".index.json") ||
         ends(".gguf");
}

bool written_here(const std::string& name) {
  return name == "config.json" || name == "quantize_config.json" || name == "quant_config.json" ||
         name.rfind("quantization_metadata_", 0) == 0;
}

// Removes the temporary directory unless released.
struct TempDirGuard {
  fs::path path;
  bool keep = false;
  ~TempDirGuard() {
    if (!keep && !path.empty()) {
      std::error_code ec;
      fs::remove_all(path, ec);
    }
  }
};

std::string json_text(const json& j) { return j.dump(2) + "\n"; }

}  // namespace

namespace {

// True when `inner` is `outer` or lies below it (both canonical).
bool within(const fs::path& inner, const fs::path& outer) {
  auto i = inner.begin();
  for (auto o = outer.begin(); o != outer.end(); ++o, ++i) {
    if (o->empty() && std::next(o) == outer.end()) break;  // a trailing separator
    if (i == inner.end() || *i != *o) return false;
  }
  return true;
}

// A process that may still be writing (kill(pid, 0) fails with ESRCH only when no such process exists).
bool process_alive(long pid) { return pid > 0 && (::kill(pid_t(pid), 0) == 0 || errno != ESRCH); }

// Leftovers of a run that was killed (kill -9, power loss) before it renamed its output into place, found by
// their exact names beside `out`: .NAME.tmp-PID-N (an unfinished output) is removed; .NAME.old-PID-N (the
// previous output, moved aside just before the rename) is put back when `out` is missing, else removed.
// Entries of a process that is still running are left alone.
void clean_stale_temps(const fs::path& out) {
  const std::string name = out.filename().string();
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(out.parent_path(), ec)) {
    const std::string entry = e.path().filename().string();
    for (const char* kind : {"tmp", "old"}) {
      const std::string prefix = "." + name + "." + kind + "-";
      if (entry.rfind(prefix, 0) != 0) continue;
      long pid = 0, n = 0;
      char tail = 0;
      if (std::sscanf(entry.c_str() + prefix.size(), "%ld-%ld%c", &pid, &n, &tail) != 2) continue;
      std::error_code dec;
      if (!e.is_directory(dec) || process_alive(pid) || pid == long(::getpid())) continue;
      if (kind[0] == 'o' && !fs::exists(out)) {
        log_warn("{}: restoring the previous output from {} (left by a run that was killed)", out.string(), entry);
        fs::rename(e.path(), out, dec);
      } else {
        log_warn("{}: removing {} (left by a run that was killed)", out.parent_path().string(), entry);
        fs::remove_all(e.path(), dec);
      }
    }
  }
}

}  // namespace

void check_output_dir(const std::string& output_dir, const std::string& source_dir, bool overwrite) {
  check(!output_dir.empty(), "the output directory is empty");
  std::error_code ec;
  fs::path out = fs::weakly_canonical(fs::absolute(output_dir), ec);
  fs::path src = fs::weakly_canonical(fs::absolute(source_dir), ec);
  check(out != src, "output directory {} is the source model directory; write the quantized model elsewhere", output_dir);
  // --overwrite replaces the whole output directory: it must neither hold the source nor lie inside it.
  check(!within(src, out), "output directory {} contains the source model directory {}; write the quantized model elsewhere",
        output_dir, source_dir);
  check(!within(out, src), "output directory {} is inside the source model directory {}; write the quantized model elsewhere",
        output_dir, source_dir);
  if (!fs::exists(output_dir)) return;
  check(fs::is_directory(output_dir), "output directory {} exists and is not a directory", output_dir);
  if (fs::is_empty(output_dir)) return;
  check(overwrite, "output directory {} exists and is not empty; the overwrite option replaces it", output_dir);
}

void write_checkpoint(const CheckpointFiles& f) {
  check(!f.output_dir.empty(), "the output directory is empty");
  fs::path out = fs::absolute(f.output_dir).lexically_normal();
  if (out.filename().empty()) out = out.parent_path();
  fs::path parent = out.parent_path();
  clean_stale_temps(out);  // first: a previous output it puts back is then checked like any other
  check_output_dir(f.output_dir, f.source_dir, f.overwrite);
  fs::create_directories(parent);
  auto cancel_point = [&] {
    if (f.cancelled && f.cancelled()) fail("interrupted: nothing was written to {}", f.output_dir);
  };
  static std::atomic<int> counter{0};
  TempDirGuard tmp;
  tmp.path = parent / fmt::format(".{}.tmp-{}-{}", out.filename().string(), ::getpid(), counter++);
  fs::create_directory(tmp.path);

  // Weights: greedy shards in the given order.
  std::vector<std::vector<size_t>> shards(1);
  int64_t cur = 0, total = 0;
  for (size_t i = 0; i < f.tensors.size(); ++i) {
    const int64_t b = int64_t(f.tensors[i].second.nbytes());
    if (cur > 0 && cur + b > f.max_shard_bytes) shards.emplace_back(), cur = 0;
    shards.back().push_back(i);
    cur += b;
    total += b;
  }
  const std::map<std::string, std::string> meta{{"format", "pt"}};
  if (shards.size() == 1 && f.quantized_file.empty()) {
    std::vector<std::pair<std::string, Tensor>> all(f.tensors.begin(), f.tensors.end());
    write_safetensors((tmp.path / "model.safetensors").string(), all, meta);
  } else {
    json index;
    json map = json::object();
    if (!f.quantized_file.empty()) {
      write_safetensors((tmp.path / f.quantized_file).string(), f.quantized_tensors, meta);
      for (const auto& [name, t] : f.quantized_tensors) {
        map[name] = f.quantized_file;
        total += int64_t(t.nbytes());
      }
    }
    index["metadata"] = {{"total_size", total}};
    for (size_t s = 0; s < shards.size(); ++s) {
      cancel_point();
      std::string name = fmt::format("model-{:05d}-of-{:05d}.safetensors", s + 1, shards.size());
      std::vector<std::pair<std::string, Tensor>> part;
      for (size_t i : shards[s]) {
        part.push_back(f.tensors[i]);
        check(!map.contains(f.tensors[i].first), "checkpoint writer: tensor '{}' given twice", f.tensors[i].first);
        map[f.tensors[i].first] = name;
      }
      write_safetensors((tmp.path / name).string(), part, meta);
    }
    index["weight_map"] = map;
    write_file_atomic((tmp.path / "model.safetensors.index.json").string(), json_text(index));
  }
  cancel_point();
  write_file_atomic((tmp.path / "config.json").string(), json_text(f.config));
  if (!f.quantize_config.is_null())
    write_file_atomic((tmp.path / "quantize_config.json").string(), json_text(f.quantize_config));
  if (!f.metadata_name.empty()) write_file_atomic((tmp.path / f.metadata_name).string(), json_text(f.metadata));
  for (const auto& e : fs::directory_iterator(f.source_dir)) {
    const std::string name = e.path().filename().string();
    if (!e.is_regular_file() || is_weight_file(name) || written_here(name)) continue;
    fs::copy_file(e.path(), tmp.path / name, fs::copy_options::overwrite_existing);
  }
  cancel_point();

  // Publish: an old output (--overwrite) is moved aside first and removed after the rename.
  fs::path old;
  if (fs::exists(out)) {
    old = parent / fmt::format(".{}.old-{}-{}", out.filename().string(), ::getpid(), counter++);
    fs::rename(out, old);
  }
  std::error_code ec;
  fs::rename(tmp.path, out, ec);
  if (ec) {
    if (!old.empty()) fs::rename(old, out);
    fail("cannot rename {} to {}: {}", tmp.path.string(), out.string(), ec.message());
  }
  tmp.keep = true;
  if (!old.empty()) fs::remove_all(old, ec);
}

}  // namespace dlx
