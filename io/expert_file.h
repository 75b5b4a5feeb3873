#ifndef EXPERTD_IO_EXPERT_FILE_H_
#define EXPERTD_IO_EXPERT_FILE_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "base/dtype.h"
#include "io/expert_bundle.h"

namespace expertd::io {

// The packed expert file (format in io/FORMAT.md): every routed expert of a
// model, each one bundle (gate | up | down, row-major, in one dtype) that a
// single read brings in, aligned for O_DIRECT.

struct ExpertFileLayout {
  uint64_t model_fingerprint = 0;  // of the source checkpoint; see FORMAT.md
  // Stored in the header as the format's own number (FORMAT.md), not as
  // DType's enumerator value; a dtype with no number there cannot be packed.
  DType dtype = DType::kBF16;
  uint32_t num_layers = 0;   // the model's layers; dense layers have no entries
  uint32_t num_experts = 0;  // routed experts per MoE layer
  uint32_t hidden_size = 0;
  uint32_t intermediate_size = 0;  // of one routed expert
  uint32_t alignment = 4096;       // of every bundle's offset and slot size

  // Where gate, up and down lie in each bundle (io/expert_bundle.h).
  BundleLayout bundle() const { return ExpertBundleLayout(dtype, hidden_size, intermediate_size); }
  // gate [ffn][hidden] + up [ffn][hidden] + down [hidden][ffn] in dtype.
  uint64_t expert_bytes() const { return bundle().bytes; }
  // expert_bytes rounded up to alignment: the size of one cache slot.
  uint64_t slot_bytes() const;
};

// Where one expert's bundle lives in the file.
struct ExpertExtent {
  uint64_t offset = 0;  // aligned
  uint64_t length = 0;  // expert_bytes
  uint64_t checksum = 0;  // XXH64 of the bundle's bytes, seed 0
};

// Writes a packed file: to a temporary name beside `path`, renamed over
// `path` only by Finish(), so an interrupted pack never leaves a file that
// looks complete. Bundles may be added in any order; each (layer, expert)
// once.
class ExpertFileWriter {
 public:
  static absl::StatusOr<std::unique_ptr<ExpertFileWriter>> Create(const std::string& path,
                                                                  const ExpertFileLayout& layout);
  ~ExpertFileWriter();  // removes the temporary file unless Finish() succeeded

  // bundle.size() must equal layout.expert_bytes().
  absl::Status Add(int layer, int expert, absl::Span<const std::byte> bundle);
  // Writes the index and header, fsyncs, renames into place.
  absl::Status Finish();

 private:
  ExpertFileWriter() = default;
  struct State;
  std::unique_ptr<State> state_;
};

// An opened packed file: header and index read and validated at Open.
class ExpertFile {
 public:
  // Validates magic, version, header fields, index bounds against the file
  // size (a truncated file fails here, naming the first expert past the end)
  // and, when given, the model fingerprint.
  static absl::StatusOr<std::unique_ptr<ExpertFile>> Open(const std::string& path,
                                                         std::optional<uint64_t> expected_fingerprint);

  const std::string& path() const { return path_; }
  const ExpertFileLayout& layout() const { return layout_; }
  // NotFound naming the expert when the file has no such bundle.
  absl::StatusOr<ExpertExtent> Find(int layer, int expert) const;
  // DataLoss naming the expert and file when bundle's XXH64 differs.
  absl::Status Verify(int layer, int expert, absl::Span<const std::byte> bundle) const;

 private:
  ExpertFile() = default;
  std::string path_;
  ExpertFileLayout layout_;
  std::vector<ExpertExtent> index_;  // [num_layers * num_experts]; length 0 = absent
};

uint64_t Xxh64(absl::Span<const std::byte> bytes, uint64_t seed = 0);

}  // namespace expertd::io

#endif  // EXPERTD_IO_EXPERT_FILE_H_
