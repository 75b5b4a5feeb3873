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
#include "io/bundle_hash.h"
#include "io/expert_bundle.h"

namespace expertd::io {

// The packed expert file (format in io/FORMAT.md): every routed expert of a
// model, each one bundle (gate | up | down, row-major, each matrix in its own
// dtype since version 2) that a single read brings in, aligned for O_DIRECT.

struct ExpertFileLayout {
  uint64_t model_fingerprint = 0;  // of the source checkpoint; see FORMAT.md
  // The slot's dtypes: a bundle of gate, up and down in these is the
  // largest the file holds, and every slot is that bundle rounded up to
  // alignment (the cache is a pool of equal slots). The packer gives each
  // matrix the widest dtype any expert stores it in; a uniform file (every
  // version-1 file) has one dtype in all three, and bundles added without
  // their own dtypes are stored in these. Kept in the file as the format's
  // own numbers (FORMAT.md), not as DType's enumerator values; a dtype with
  // no number there cannot be packed.
  BundleDtypes dtypes;
  uint32_t num_layers = 0;   // the model's layers; dense layers have no entries
  uint32_t num_experts = 0;  // routed experts per MoE layer
  uint32_t hidden_size = 0;
  uint32_t intermediate_size = 0;  // of one routed expert
  uint32_t alignment = 4096;       // of every bundle's offset and slot size

  // The slot's bundle (io/expert_bundle.h): the largest one. An expert's
  // own is ExpertFile::Bundle.
  BundleLayout bundle() const { return ExpertBundleLayout(dtypes, hidden_size, intermediate_size); }
  // gate [ffn][hidden] + up [ffn][hidden] + down [hidden][ffn] in the
  // slot's dtypes: the largest bundle's bytes.
  uint64_t expert_bytes() const { return bundle().bytes; }
  // expert_bytes rounded up to alignment: the size of one cache slot.
  uint64_t slot_bytes() const;
};

// Where one expert's bundle lives in the file, and what it holds.
struct ExpertExtent {
  uint64_t offset = 0;  // aligned
  uint64_t length = 0;  // of the bundle of `dtypes`: at most expert_bytes
  uint64_t checksum = 0;  // of the bundle's bytes, by the file's BundleHash
  BundleDtypes dtypes;    // version 1: the file's one dtype
};

// How many of a file's experts are packed in each combination of dtypes.
struct BundleDtypesCount {
  BundleDtypes dtypes;
  uint64_t experts = 0;
  uint64_t bundle_bytes = 0;  // of one such expert
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

  // A bundle in the layout's (slot's) dtypes: bundle.size() must equal
  // layout.expert_bytes().
  absl::Status Add(int layer, int expert, absl::Span<const std::byte> bundle);
  // A bundle in its own dtypes: bundle.size() must be their bundle's bytes,
  // which must fit the slot (at most layout.expert_bytes()), and its rows
  // whole blocks of each dtype.
  absl::Status Add(int layer, int expert, const BundleDtypes& dtypes, absl::Span<const std::byte> bundle);
  // Writes the index and header, fsyncs, renames into place.
  absl::Status Finish();

 private:
  ExpertFileWriter() = default;
  struct State;
  std::unique_ptr<State> state_;
};

// An opened packed file (version 1, 2 or 3): header and index read and
// validated at Open.
class ExpertFile {
 public:
  // Validates magic, version, header fields, index entries (each one's
  // length is the bundle its dtypes give), index bounds against the file
  // size (a truncated file fails here, naming the first expert past the end)
  // and, when given, the model fingerprint.
  static absl::StatusOr<std::unique_ptr<ExpertFile>> Open(const std::string& path,
                                                         std::optional<uint64_t> expected_fingerprint);

  const std::string& path() const { return path_; }
  uint32_t version() const { return version_; }
  // How its bundles are checksummed: XXH64 before version 3, XXH3 since.
  BundleHash bundle_hash() const { return version_ >= 3 ? BundleHash::kXxh3 : BundleHash::kXxh64; }
  const ExpertFileLayout& layout() const { return layout_; }
  // NotFound naming the expert when the file has no such bundle.
  absl::StatusOr<ExpertExtent> Find(int layer, int expert) const;
  // Where the expert's gate, up and down lie in its bundle (and so in its
  // cache slot), in their own dtypes; NotFound as Find.
  absl::StatusOr<BundleLayout> Bundle(int layer, int expert) const;
  // The dtype combinations of the file's bundles, in first-seen file index
  // order (layer-major), with their counts: one entry for a uniform file.
  const std::vector<BundleDtypesCount>& dtype_mix() const { return dtype_mix_; }
  // DataLoss naming the expert and file when bundle's checksum differs.
  absl::Status Verify(int layer, int expert, absl::Span<const std::byte> bundle) const;
  // The same, given the bundle's hash (bundle_hash(); io/bundle_verifier.h
  // takes it piece by piece).
  absl::Status CheckChecksum(int layer, int expert, uint64_t checksum) const;

 private:
  ExpertFile() = default;
  std::string path_;
  uint32_t version_ = 0;
  ExpertFileLayout layout_;
  std::vector<BundleDtypesCount> dtype_mix_;
  std::vector<ExpertExtent> index_;  // [num_layers * num_experts]; length 0 = absent
};

uint64_t Xxh64(absl::Span<const std::byte> bytes, uint64_t seed = 0);

// "q4_k/q4_k/q6_k x 2, q4_k x 2" (dtypes x experts): a file's mix, for logs,
// stats and the pack summary.
std::string DescribeDtypeMix(const std::vector<BundleDtypesCount>& mix);

}  // namespace expertd::io

#endif  // EXPERTD_IO_EXPERT_FILE_H_
