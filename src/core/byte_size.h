// Byte sizes as people write them (--kv-budget, --max-shard-size): a number, decimal fraction or exponent allowed
// ("1.5G", "1e9"), then an optional unit, case-insensitive:
//   none or B                      bytes
//   K, M, G, T and KiB, MiB, ...   powers of 1024 (a bare letter is the binary unit, as in `ls -h`)
//   KB, MB, GB, TB                 powers of 1000 (as in the safetensors/transformers "5GB" shard size)
#pragma once
#include <cstdint>
#include <string_view>

namespace dlx {

// The size in bytes, rounded down; at least one byte. Throws Error naming `what` and the text otherwise.
int64_t parse_byte_size(std::string_view text, std::string_view what);

}  // namespace dlx
