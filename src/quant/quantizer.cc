#include "quant/quantizer.h"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <set>

#include "core/error.h"
#include "core/log.h"
#include "core/thread_pool.h"
#include "formats/awq.h"
#include "formats/gptq.h"
#include "formats/quant_codes.h"
#include "formats/quant_config.h"
#include "io/safetensors.h"
#include "model/model.h"
#include "quant/checkpoint_writer.h"
#include "quant/host_ops.h"
#include "quant/layer_quant.h"
#include "quant/layer_runner.h"
#include "quant/phase_times.h"

namespace dlx {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

const char* kRoleNames[7] = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"};

bool has_calibration(const QuantizeOptions& o) { return !o.calib.text_path.empty() || !o.calib.ids_path.empty(); }

}  // namespace

std::vector<std::array<std::optional<double>, 4>> parse_awq_ratios(const json& j, const std::string& what,
                                                                   bool fold_vo) {
  check(j.is_object() && j.contains("method") && j["method"] == "awq",
        "{}: not the metadata of an AWQ run (quantization_metadata_awq.json with \"method\": \"awq\")", what);
  check(j.contains("layer_notes") && j["layer_notes"].is_array() && !j["layer_notes"].empty(),
        "{}: no layer_notes array (the scale exponents of each layer)", what);
  static const char* kPairs[4] = {"norm_qkv", "v_o", "norm_gate_up", "up_down"};
  std::map<int64_t, std::array<std::optional<double>, 4>> by_layer;
  for (const json& e : j["layer_notes"]) {
    check(e.is_object() && e.contains("layer") && e["layer"].is_number_integer() && e["layer"].get<int64_t>() >= 0,
          "{}: a layer_notes entry has no layer index", what);
    const int64_t l = e["layer"].get<int64_t>();
    check(!by_layer.count(l), "{}: layer_notes has layer {} twice", what, l);
    const json* sc = e.contains("notes") && e["notes"].is_object() && e["notes"].contains("scales")
                         ? &e["notes"]["scales"] : nullptr;
    check(sc && sc->is_object(), "{}: layer_notes[layer {}] has no notes.scales", what, l);
    std::array<std::optional<double>, 4> r;
    for (size_t p = 0; p < 4; ++p) {
      const bool want = p != 1 || fold_vo;
      if (!sc->contains(kPairs[p])) {
        check(!want, "{}: layer {} has no {} scale{}", what, l, kPairs[p],
              p == 1 ? " (that run had --awq-no-vo-fold: give it here too)" : "");
        continue;
      }
      check(want, "{}: layer {} has a v_o scale, but this run has --awq-no-vo-fold (the two runs must agree)", what, l);
      const json& f = (*sc)[kPairs[p]];
      check(f.is_object() && f.contains("ratio") && f["ratio"].is_number(), "{}: layer {} {}: no numeric ratio", what,
            l, kPairs[p]);
      const double v = f["ratio"].get<double>();
      check(v == -1.0 || (v >= 0.0 && v < 1.0), "{}: layer {} {}: ratio {} is neither in [0, 1) nor -1 (s = 1)", what,
            l, kPairs[p], v);
      r[p] = v;
    }
    by_layer[l] = r;
  }
  std::vector<std::array<std::optional<double>, 4>> out;
  for (const auto& [l, r] : by_layer) {
    check(l == int64_t(out.size()), "{}: layer_notes has no entry for layer {}", what, out.size());
    out.push_back(r);
  }
  return out;
}

namespace {

QuantSettings resolve(const QuantizeOptions& o) {
  QuantSettings s;
  check(o.format == "gptq" || o.format == "awq", "quantize: format must be gptq or awq (got '{}')", o.format);
  s.format = o.format;
  // Without calibration data the default is RTN, as the original Diffulex quantize script (no calibration
  // options) did; with data it is the format's own algorithm.
  s.method = !o.method.empty() ? o.method : has_calibration(o) ? o.format : "rtn";
  check(s.method == "gptq" || s.method == "awq" || s.method == "rtn", "quantize: method must be gptq, awq or rtn (got '{}')",
        s.method);
  if (s.format == "awq")
    check(o.bits == 4, "quantize: bits {}: the AutoAWQ gemm layout holds 4-bit weights only", o.bits);
  else
    check(o.bits == 4 || o.bits == 8, "quantize: bits {}: GPTQ checkpoints here are 4 or 8 bits", o.bits);
  s.bits = o.bits;
  check(o.group_size == kOneGroupPerRow || o.group_size > 0,
        "quantize: group size {} must be positive or -1 (one group per row)", o.group_size);
  s.group_size = o.group_size;
  s.sym = o.sym.value_or(s.format == "gptq" && s.method != "awq");
  check(!o.desc_act || (s.method == "gptq" && s.format == "gptq"),
        "quantize: act-order (desc_act) needs method gptq and format gptq (AWQ has no g_idx)");
  check(!o.static_groups || s.method == "gptq", "quantize: static groups are a GPTQ option (method gptq)");
  s.desc_act = o.desc_act;
  s.static_groups = o.static_groups;
  s.true_sequential = o.true_sequential;
  check(o.damp > 0 && o.damp < 1, "quantize: damp {} must be in (0, 1)", o.damp);
  s.damp = o.damp;
  check(o.awq_grid >= 1, "quantize: the AWQ grid must be at least 1");
  s.awq_grid = o.awq_grid;
  s.awq_search_tokens = o.awq_search_tokens;
  s.awq_fold_vo = o.awq_fold_vo;
  if (!o.awq_scales_from.empty()) {
    check(s.method == "awq", "quantize: --awq-scales-from needs method awq (got {})", s.method);
    s.awq_ratios = parse_awq_ratios(read_json_file(o.awq_scales_from), o.awq_scales_from, s.awq_fold_vo);
  }
  if (o.dtype == "float16") s.norm_dtype = DType::F16;
  else if (o.dtype == "bfloat16") s.norm_dtype = DType::BF16;
  else if (o.dtype == "float32") s.norm_dtype = DType::F32;
  else fail("quantize: dtype must be float16, bfloat16 or float32 (got '{}')", o.dtype);
  return s;
}

void validate_model(const Model& m, const QuantSettings& s) {
  check(m.quant() == nullptr, "{}: the model is already quantized ({}); quantize a bf16/fp16 checkpoint", m.dir(),
        m.quant() ? m.quant()->source : "");
  for (const auto& l : m.layers())
    for (const auto& lin : l.linear) {
      const std::string& p = lin->spec().prefix;
      const int64_t k = lin->in_features(), n = lin->out_features();
      check(lin->info().group_size == 0, "{}: layer '{}' is already quantized ({})", m.dir(), p, lin->info().kind);
      check(s.group_size == kOneGroupPerRow || k % s.group_size == 0,
            "quantize: group size {} does not divide in_features {} of '{}'", s.group_size, k, p);
      if (s.format == "gptq")
        check(k % (32 / s.bits) == 0, "'{}': in_features {} is not a multiple of {} ({}-bit GPTQ packs along inputs)",
              p, k, 32 / s.bits, s.bits);
      else
        check(n % 8 == 0, "'{}': out_features {} is not a multiple of 8 (AWQ packs 8 outputs per int32)", p, n);
    }
}

Tensor to_f16(const std::vector<float>& v) {
  Tensor t = Tensor::zeros(DType::F16, {int64_t(v.size())});
  for (size_t i = 0; i < v.size(); ++i) t.data<uint16_t>()[i] = f32_to_f16(v[i]);
  return t;
}

Tensor convert(const Tensor& t, DType dt, const std::string& name) {
  if (!is_float(t.dtype()) || t.dtype() == DType::F8_E4M3 || t.dtype() == dt) return t;
  // The embedding and the LM head of a 7B model hold ~545M values each: converted on every core. A value out of
  // fp16's range is reported at its first index, as a serial loop would find it.
  Tensor out = host_uninit(dt, t.shape());
  const int64_t n = t.numel();
  std::atomic<int64_t> first_bad{n};
  parallel_for(n, 1 << 18, [&](int64_t i0, int64_t i1) {
    // Through a small F32 buffer, so that each loop has one dtype (no switch per element).
    constexpr int64_t kBuf = 4096;
    float buf[kBuf];
    const void* src = t.data();
    for (int64_t b0 = i0; b0 < i1; b0 += kBuf) {
      const int64_t m = std::min(kBuf, i1 - b0);
      if (t.dtype() == DType::BF16)
        for (int64_t i = 0; i < m; ++i) buf[i] = bf16_to_f32(static_cast<const uint16_t*>(src)[b0 + i]);
      else
        for (int64_t i = 0; i < m; ++i) buf[i] = load_as_f32(src, t.dtype(), size_t(b0 + i));
      if (dt == DType::F16) {
        for (int64_t i = 0; i < m; ++i)
          if (std::fabs(buf[i]) > 65504.0f && std::isfinite(buf[i])) {
            int64_t cur = first_bad.load();
            while (b0 + i < cur && !first_bad.compare_exchange_weak(cur, b0 + i)) {
            }
            return;
          }
        uint16_t* o = out.data<uint16_t>() + b0;
        for (int64_t i = 0; i < m; ++i) o[i] = f32_to_f16(buf[i]);
      } else if (dt == DType::BF16) {
        uint16_t* o = out.data<uint16_t>() + b0;
        for (int64_t i = 0; i < m; ++i) o[i] = f32_to_bf16(buf[i]);
      } else {
        std::memcpy(out.data<float>() + b0, buf, size_t(m) * sizeof(float));
      }
    }
  });
  if (const int64_t i = first_bad.load(); i < n)
    fail("tensor '{}' holds {} which does not fit in float16; quantize with dtype bfloat16", name,
         load_as_f32(t.data(), t.dtype(), size_t(i)));
  return out;
}

Tensor vector_tensor(const std::vector<float>& v, DType dt, const std::string& name) {
  return convert(Tensor::from_data(DType::F32, {int64_t(v.size())}, v.data()), dt, name);
}

// The checkpoint tensors of one quantized linear (formats/gptq.h, formats/awq.h), through the layout helpers.
void pack_linear(const QuantizedLinear& q, const QuantSettings& s, std::map<std::string, Tensor>& out) {
  if (s.format == "gptq") {
    GptqTensors t = pack_gptq(q.codes, /*v1=*/true, DType::F16);
    out[q.prefix + ".qweight"] = t.qweight;
    out[q.prefix + ".qzeros"] = t.qzeros;
    out[q.prefix + ".scales"] = t.scales;
    out[q.prefix + ".g_idx"] = t.g_idx;
  } else {
    AwqTensors t = pack_awq(q.codes, DType::F16);
    out[q.prefix + ".qweight"] = t.qweight;
    out[q.prefix + ".qzeros"] = t.qzeros;
    out[q.prefix + ".scales"] = t.scales;
  }
  if (q.bias.defined())
    out[q.prefix + ".bias"] = to_f16(std::vector<float>(q.bias.data<float>(), q.bias.data<float>() + q.bias.numel()));
}

json quantization_config(const QuantSettings& s) {
  if (s.format == "gptq")
    return {{"quant_method", "gptq"},     {"bits", s.bits},
            {"group_size", s.group_size}, {"desc_act", s.desc_act},
            {"sym", s.sym},               {"static_groups", s.static_groups},
            {"damp_percent", s.damp},     {"true_sequential", s.true_sequential},
            {"checkpoint_format", "gptq"}, {"model_name_or_path", nullptr},
            {"model_file_base_name", "model"}};
  return {{"quant_method", "awq"}, {"bits", s.bits},      {"group_size", s.group_size},
          {"zero_point", true},    {"version", "gemm"},   {"modules_to_not_convert", nullptr}};
}

double mean_of(const std::vector<double>& v) {
  double s = 0;
  for (double x : v) s += x;
  return v.empty() ? 0 : s / double(v.size());
}

}  // namespace

std::string quantized_file_name(const std::string& format) {
  return fmt::format("model_quantized_{}.safetensors", format);
}

QuantizeReport quantize_model(const QuantizeOptions& o) {
  const auto t_start = std::chrono::steady_clock::now();
  PhaseTimes& phases = quant_phases();
  phases.reset();
  const QuantSettings s = resolve(o);
  check_output_dir(o.output_path, o.model_path, o.overwrite);
  LoadOptions lo;
  lo.device = o.device;
  std::unique_ptr<Model> m;
  {
    PhaseTimes::Scope t(phases, "load model");
    m = Model::load(o.model_path, lo);
  }
  // The source checkpoint is read a layer at a time from here on: its mapped pages leave the resident set after
  // the load and after each layer (they fault back in, from the page cache, where read again), so that the peak
  // resident set is about one layer's source plus the working set instead of the whole mapped file (issue 17). The
  // file's pages stay in the kernel's page cache, reclaimable, as for any file read.
  m->store().release_pages();
  // The same source, calibration and options give the same checkpoint in every run: on the GPU no kernel is chosen
  // by timing (a timed choice may differ between runs, and with it the rounding of the bf16 calibration forward,
  // which moved AWQ's flat-minimum searches to other scales from one run to the next; docs/QUANTIZER.md).
  m->backend().set_reproducible(true);
  // DIFFULEX_QUANT_SYNC_PHASES=1: phase times that include the device work each phase enqueued (phase_times.h).
  struct SyncOff {
    PhaseTimes& p;
    ~SyncOff() { p.set_sync({}); }
  } sync_off{phases};
  if (const char* v = std::getenv("DIFFULEX_QUANT_SYNC_PHASES"); v && *v && std::string(v) != "0") {
    Backend* be = &m->backend();
    phases.set_sync([be] { be->synchronize(); });
    log_info("quantize: phase timers synchronize the device (DIFFULEX_QUANT_SYNC_PHASES)");
  }
  const ModelConfig& cfg = m->config();
  validate_model(*m, s);
  check(s.awq_ratios.empty() || int64_t(s.awq_ratios.size()) == cfg.num_layers,
        "{}: scale exponents for {} layers, the model has {}", o.awq_scales_from, s.awq_ratios.size(), cfg.num_layers);

  QuantizeReport rep;
  rep.method = s.method;
  rep.format = s.format;
  rep.output = o.output_path;
  const bool has_calib = has_calibration(o);
  check(has_calib || s.method == "rtn",
        "method {} needs calibration data (a calibration text or ids file); or method rtn (round-to-nearest, no "
        "calibration: the default when no calibration data is given)",
        s.method);
  if (!has_calib && o.method.empty())
    log_warn("no calibration data: quantizing with RTN (round-to-nearest); for calibrated {} give a calibration text "
             "or ids file (docs/QUANTIZER.md)",
             s.format == "gptq" ? "GPTQ" : "AWQ");
  json calib_json = nullptr;
  std::unique_ptr<LayerRunner> runner;
  if (has_calib) {
    PhaseTimes::Scope t(phases, "calibration embed");
    Calibration cal = load_calibration(o.calib, o.model_path, cfg);
    rep.calib_sequences = cal.ids.dim(0);
    rep.calib_tokens = cal.ids.numel();
    log_info("calibration: {} sequences x {} tokens from {} ({} tokens available), mask {} ({} positions masked)",
             cal.ids.dim(0), cal.ids.dim(1), cal.source, cal.available, cal.mask, cal.masked);
    calib_json = {{"source", cal.source},         {"sequences", cal.ids.dim(0)}, {"seq_len", cal.ids.dim(1)},
                  {"tokens_available", cal.available}, {"mask", cal.mask},       {"masked_positions", cal.masked},
                  {"mask_seed", o.calib.seed}};
    runner = std::make_unique<LayerRunner>(*m, cal.ids);
  }

  // Quantize layer by layer; each layer's checkpoint tensors are packed at once (the codes are freed).
  std::map<std::string, Tensor> quantized;
  std::map<std::string, Tensor> folded;  // AWQ norms
  std::set<std::string> replaced;        // source tensor names superseded
  json layer_notes = json::array();
  const ArchNames& names = arch_names(cfg.arch);
  const auto t_quant = std::chrono::steady_clock::now();
  {
    Progress bar(fmt::format("quantize ({} {}-bit)", s.method, s.bits), cfg.num_layers);
    for (int64_t i = 0; i < cfg.num_layers; ++i) {
      if (o.cancelled && o.cancelled()) {
        // Where the time of the layers done so far went (a timed run stopped by a time limit still tells).
        log_info("quantize phases (wall, {} of {} layers, interrupted): {}", i, cfg.num_layers, phases.summary());
        fail("interrupted: nothing was written to {}", o.output_path);
      }
      if (runner) {
        PhaseTimes::Scope t(phases, "layer input snapshot");
        runner->begin(i);
      }
      LayerResult r = s.method == "gptq"  ? quantize_layer_gptq(*m, i, *runner, s)
                      : s.method == "awq" ? quantize_layer_awq(*m, i, *runner, s)
                                          : quantize_layer_rtn(*m, i, runner.get(), s);
      std::vector<double> e, er;
      PhaseTimes::Scope t(phases, "pack checkpoint");
      for (LinearRole role : kLinearRoles) {
        const QuantizedLinear& q = r.linears[int(role)];
        pack_linear(q, s, quantized);
        replaced.insert(q.prefix + ".weight");
        replaced.insert(q.prefix + ".bias");
        rep.linears.push_back({i, role, q.prefix, q.error, q.error_rtn});
        e.push_back(q.error);
        er.push_back(q.error_rtn);
      }
      const std::string lp = fmt::format(fmt::runtime(names.layer_prefix), i);
      if (!r.attn_norm.empty()) folded[lp + names.attn_norm] = vector_tensor(r.attn_norm, s.norm_dtype, lp + names.attn_norm);
      if (!r.ffn_norm.empty()) folded[lp + names.ffn_norm] = vector_tensor(r.ffn_norm, s.norm_dtype, lp + names.ffn_norm);
      if (!r.notes.empty()) layer_notes.push_back({{"layer", i}, {"notes", r.notes}});
      bar.update(i + 1, runner ? fmt::format("layer {}: rel err {:.4f} (RTN {:.4f})", i, mean_of(e), mean_of(er))
                               : fmt::format("layer {}", i));
      m->store().release_pages();
    }
  }
  rep.quantize_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_quant).count();

  // The output's tensors: the quantized linears (model_quantized_{format}.safetensors, the file the original
  // Diffulex quantize script writes and an overlay for the source directory, docs/QUANTIZER.md), and folded norms
  // and everything else converted to --dtype (model-0000i-of-0000N.safetensors), one index over both.
  const TensorStore& store = m->store();
  std::map<std::string, Tensor> others;
  std::optional<PhaseTimes::Scope> t_convert(std::in_place, phases, "convert unquantized");
  for (const std::string& name : store.names()) {
    if (replaced.count(name)) continue;
    auto f = folded.find(name);
    others[name] = f != folded.end() ? f->second : convert(store.get(name), s.norm_dtype, name);
  }
  t_convert.reset();
  CheckpointFiles files;
  files.source_dir = o.model_path;
  files.output_dir = o.output_path;
  files.overwrite = o.overwrite;
  files.max_shard_bytes = o.max_shard_bytes;
  files.cancelled = o.cancelled;
  files.tensors.assign(others.begin(), others.end());
  files.quantized_file = quantized_file_name(s.format);
  files.quantized_tensors.assign(quantized.begin(), quantized.end());
  files.config = read_json_file((fs::path(o.model_path) / "config.json").string());
  files.config["torch_dtype"] = o.dtype;
  files.config["quantization_config"] = quantization_config(s);
  if (s.format == "gptq") files.quantize_config = quantization_config(s);
  files.metadata_name = fmt::format("quantization_metadata_{}.json", s.format);
  json layers = json::array(), modules = json::array();
  for (const auto& l : m->layers())
    for (const auto& lin : l.linear)
      modules.push_back({{"name", lin->spec().prefix},
                         {"out_features", lin->out_features()},
                         {"in_features", lin->in_features()},
                         {"group_size", s.group_size},
                         {"bits", s.bits}});
  for (const LinearReport& l : rep.linears)
    layers.push_back({{"name", l.name},
                      {"layer", l.layer},
                      {"role", kRoleNames[int(l.role)]},
                      {"rel_output_error", l.error < 0 ? json(nullptr) : json(l.error)},
                      {"rel_output_error_rtn", l.error_rtn < 0 ? json(nullptr) : json(l.error_rtn)}});
  // The original Diffulex script's fields (quant_format, quant_method, group_size, bits, quantized_modules) and ours.
  files.metadata = {{"tool", "diffulex 0.1.0"},
                    {"quant_format", s.format},
                    {"quant_method", s.method == "rtn" ? "simple" : "auto"},
                    {"quantized_modules", modules},
                    {"quantized_file", files.quantized_file},
                    {"method", s.method},
                    {"format", s.format},
                    {"bits", s.bits},
                    {"group_size", s.group_size},
                    {"sym", s.sym},
                    {"desc_act", s.desc_act},
                    {"static_groups", s.static_groups},
                    {"damp_percent", s.damp},
                    {"true_sequential", s.true_sequential},
                    {"source_model", o.model_path},
                    {"calibration", calib_json},
                    {"unquantized_dtype", o.dtype},
                    {"quantize_seconds", rep.quantize_seconds},
                    {"rel_output_error_definition",
                     "||X (W_q - W)^T|| / ||X W^T|| over the calibration inputs X each linear saw during sequential "
                     "quantization (in AWQ's scaled frame for AWQ); _rtn: plain round-to-nearest of the same W on "
                     "the same X"},
                    {"layers", layers},
                    {"layer_notes", layer_notes}};
  // Where the time went (wall seconds per phase, all layers; writing the files comes after this is written).
  json phase_json = json::object();
  for (const auto& [name, sec] : phases.totals()) phase_json[name] = sec;
  files.metadata["phase_seconds"] = phase_json;
  if (s.method == "awq")
    files.metadata["awq"] = {{"grid", s.awq_grid},
                             {"search_tokens", s.awq_search_tokens},
                             {"v_o_fold", s.awq_fold_vo ? "tied per kv head (grouped-query attention)" : "off"},
                             {"clip", "max |w| shrink 0..45% in 5% steps, exact squared error from H"},
                             {"scales_from", o.awq_scales_from.empty() ? json(nullptr) : json(o.awq_scales_from)}};
  {
    PhaseTimes::Scope t(phases, "write");
    write_checkpoint(files);
  }
  log_info("quantize phases (wall, all layers): {}", phases.summary());
  rep.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();
  return rep;
}

std::string format_error_table(const QuantizeReport& r) {
  const bool have = !r.linears.empty() && r.linears[0].error >= 0;
  std::string out;
  if (!have) return "no calibration data: no error statistics (RTN)\n";
  out += fmt::format("relative output error on the calibration inputs, {} / RTN per linear\n", r.method);
  out += fmt::format("{:>5}", "layer");
  for (const char* n : kRoleNames) out += fmt::format(" {:>15}", n);
  out += fmt::format(" {:>15}\n", "mean");
  std::map<int64_t, std::vector<const LinearReport*>> by_layer;
  for (const auto& l : r.linears) by_layer[l.layer].push_back(&l);
  double sum = 0, sum_rtn = 0;
  int64_t cnt = 0;
  for (const auto& [layer, ls] : by_layer) {
    out += fmt::format("{:>5}", layer);
    double s = 0, sr = 0;
    for (const LinearReport* l : ls) {
      out += fmt::format(" {:>15}", fmt::format("{:.4f}/{:.4f}", l->error, l->error_rtn));
      s += l->error;
      sr += l->error_rtn;
    }
    out += fmt::format(" {:>15}\n", fmt::format("{:.4f}/{:.4f}", s / double(ls.size()), sr / double(ls.size())));
    sum += s;
    sum_rtn += sr;
    cnt += int64_t(ls.size());
  }
  out += fmt::format("mean over all linears: {} {:.4f}, RTN {:.4f} ({:+.1f}%)\n", r.method, sum / double(cnt),
                     sum_rtn / double(cnt), 100.0 * (sum / sum_rtn - 1.0));
  return out;
}

}  // namespace dlx
