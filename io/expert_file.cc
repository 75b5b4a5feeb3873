#include "io/expert_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <optional>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "io/posix_file.h"

namespace expertd::io {
namespace {

// Header layout, versions 1 to 3 (io/FORMAT.md). Every field is
// little-endian. The writer writes version 3; the reader takes all three.
constexpr char kMagic[8] = {'E', 'X', 'P', 'E', 'R', 'T', 'D', '1'};
constexpr uint32_t kVersion1 = 1;  // one dtype for every matrix of the file
constexpr uint32_t kVersion2 = 2;  // gate, up and down of each bundle in their own
constexpr uint32_t kVersion3 = 3;  // as 2, bundles checksummed with XXH3 (io/bundle_hash.h)
constexpr uint64_t kHeaderBytes = 4096;
constexpr size_t kOffMagic = 0;
constexpr size_t kOffVersion = 8;
constexpr size_t kOffHeaderBytes = 12;
constexpr size_t kOffFingerprint = 16;
constexpr size_t kOffDtype = 24;  // v1: u32 code; v2: the slot's gate, up, down codes as u8, then a zero byte
constexpr size_t kOffNumLayers = 28;
constexpr size_t kOffNumExperts = 32;
constexpr size_t kOffHiddenSize = 36;
constexpr size_t kOffIntermediateSize = 40;
constexpr size_t kOffAlignment = 44;
constexpr size_t kOffExpertBytes = 48;
constexpr size_t kOffSlotBytes = 56;
constexpr size_t kOffIndexOffset = 64;
constexpr size_t kOffIndexBytes = 72;
constexpr size_t kOffIndexChecksum = 80;
constexpr size_t kOffDataOffset = 88;
constexpr size_t kOffNumBundles = 96;
constexpr size_t kOffFileBytes = 104;
constexpr size_t kFieldsEnd = 112;  // [kFieldsEnd, kOffHeaderChecksum) is reserved, zero
// The checksum sits in the header page's last 8 bytes in every version, so a
// reader can tell a corrupted header from a newer version before trusting
// the version field.
constexpr size_t kOffHeaderChecksum = kHeaderBytes - 8;
// Version 1: offset, length, checksum, u64 each. Version 2 adds the
// bundle's gate, up and down dtype codes (u8 each) and 5 zero bytes.
constexpr uint64_t kIndexEntryBytesV1 = 24;
constexpr uint64_t kIndexEntryBytesV2 = 32;
constexpr size_t kEntryOffDtypes = 24;
uint64_t IndexEntryBytes(uint32_t version) { return version == kVersion1 ? kIndexEntryBytesV1 : kIndexEntryBytesV2; }

// Bounds that keep the size arithmetic below far from overflow; real MoE
// models are orders of magnitude inside them.
constexpr uint32_t kMaxLayers = 1 << 16;
constexpr uint32_t kMaxExperts = 1 << 16;
constexpr uint64_t kMaxIndexEntries = uint64_t{1} << 24;
constexpr uint32_t kMaxDimension = 1 << 20;
constexpr uint32_t kMaxAlignment = 1 << 30;

using Page = std::array<std::byte, kHeaderBytes>;

void StoreU32(std::byte* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<std::byte>(v >> (8 * i));
}
void StoreU64(std::byte* p, uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = static_cast<std::byte>(v >> (8 * i));
}
uint32_t LoadU32(const std::byte* p) {
  uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v |= static_cast<uint32_t>(p[i]) << (8 * i);
  return v;
}
uint64_t LoadU64(const std::byte* p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v |= static_cast<uint64_t>(p[i]) << (8 * i);
  return v;
}

uint64_t AlignUp(uint64_t value, uint64_t alignment) { return (value + alignment - 1) / alignment * alignment; }

// The dtype numbers of the header and (version 2) the index (FORMAT.md),
// fixed by the format whatever order DType's enumerators take. A DType missing here (a
// type added to base/dtype.h later) cannot be written until the format gives
// it a number.
struct FileDtype {
  uint32_t code;
  DType dtype;
};
constexpr FileDtype kFileDtypes[] = {{0, DType::kF32},  {1, DType::kBF16}, {2, DType::kF16},
                                     {3, DType::kQ8_0}, {4, DType::kQ4_0}, {5, DType::kQ4_K},
                                     {6, DType::kQ5_K}, {7, DType::kQ6_K}, {8, DType::kMXFP4}};

std::string FileDtypeChoices() {
  std::string choices;
  for (const FileDtype& d : kFileDtypes) {
    absl::StrAppend(&choices, choices.empty() ? "" : ", ", d.code, " = ", std::string(DTypeName(d.dtype)));
  }
  return choices;
}

std::optional<uint32_t> FileDtypeCode(DType dtype) {
  for (const FileDtype& d : kFileDtypes) {
    if (d.dtype == dtype) return d.code;
  }
  return std::nullopt;
}

absl::StatusOr<DType> DTypeOfFileCode(uint32_t code) {
  for (const FileDtype& d : kFileDtypes) {
    if (d.code == code) return d.dtype;
  }
  return absl::DataLossError(absl::StrCat("unknown dtype ", code, " (", FileDtypeChoices(), ")"));
}

std::string Hex(uint64_t v) { return absl::StrCat("0x", absl::Hex(v, absl::kZeroPad16)); }

// Why a bundle of `dtypes` cannot be stored with these dimensions, or ""
// when it can: every dtype has a number in the format, and every matrix's
// rows are whole blocks of its dtype (gate and up rows are hidden_size long,
// down rows intermediate_size).
std::string BundleDtypesProblem(const BundleDtypes& dtypes, uint32_t hidden_size, uint32_t intermediate_size) {
  const struct {
    const char* name;
    DType dtype;
    uint32_t row;
    const char* row_name;
  } matrices[] = {{"gate", dtypes.gate, hidden_size, "hidden_size"},
                  {"up", dtypes.up, hidden_size, "hidden_size"},
                  {"down", dtypes.down, intermediate_size, "intermediate_size"}};
  for (const auto& m : matrices) {
    if (!FileDtypeCode(m.dtype).has_value()) {
      return absl::StrCat(m.name, " dtype ", std::string(DTypeName(m.dtype)),
                          " has no number in this format (it stores ", FileDtypeChoices(), ")");
    }
    const int64_t block = DTypeBlockElements(m.dtype);
    if (m.row % block != 0) {
      return absl::StrCat(m.name, " dtype ", std::string(DTypeName(m.dtype)), " stores rows in blocks of ", block,
                          " elements, and its rows of ", m.row_name, " ", m.row,
                          " are not whole blocks (choose a dtype with smaller blocks: q8_0, q4_0 and mxfp4 take 32)");
    }
  }
  return "";
}

// What a valid layout must satisfy, for the writer (InvalidArgument) and the
// reader (DataLoss, since there a bad field means a corrupt header).
absl::Status CheckLayout(const ExpertFileLayout& layout, absl::StatusCode code, absl::string_view what) {
  auto bad = [&](absl::string_view reason) { return absl::Status(code, absl::StrCat(what, ": ", reason)); };
  if (layout.num_layers == 0 || layout.num_layers > kMaxLayers) {
    return bad(absl::StrCat("num_layers ", layout.num_layers, " is not in [1, ", kMaxLayers, "]"));
  }
  if (layout.num_experts == 0 || layout.num_experts > kMaxExperts) {
    return bad(absl::StrCat("num_experts ", layout.num_experts, " is not in [1, ", kMaxExperts, "]"));
  }
  if (uint64_t{layout.num_layers} * layout.num_experts > kMaxIndexEntries) {
    return bad(absl::StrCat("num_layers * num_experts = ", uint64_t{layout.num_layers} * layout.num_experts,
                            " exceeds ", kMaxIndexEntries));
  }
  if (layout.hidden_size == 0 || layout.hidden_size > kMaxDimension) {
    return bad(absl::StrCat("hidden_size ", layout.hidden_size, " is not in [1, ", kMaxDimension, "]"));
  }
  if (layout.intermediate_size == 0 || layout.intermediate_size > kMaxDimension) {
    return bad(absl::StrCat("intermediate_size ", layout.intermediate_size, " is not in [1, ", kMaxDimension, "]"));
  }
  // A block-quantised matrix is stored as whole blocks per row.
  if (std::string problem = BundleDtypesProblem(layout.dtypes, layout.hidden_size, layout.intermediate_size);
      !problem.empty()) {
    return bad(absl::StrCat("the slot's ", problem));
  }
  if (layout.alignment < kDirectIoAlignment || layout.alignment > kMaxAlignment ||
      (layout.alignment & (layout.alignment - 1)) != 0) {
    return bad(absl::StrCat("alignment ", layout.alignment, " is not a power of two in [", kDirectIoAlignment, ", ",
                            kMaxAlignment, "] (O_DIRECT needs 4 KiB)"));
  }
  return absl::OkStatus();
}

uint64_t IndexBytes(const ExpertFileLayout& layout, uint32_t version) {
  return uint64_t{layout.num_layers} * layout.num_experts * IndexEntryBytes(version);
}
uint64_t DataOffset(const ExpertFileLayout& layout, uint32_t version) {
  return AlignUp(kHeaderBytes + IndexBytes(layout, version), layout.alignment);
}

std::string ExpertName(int layer, int expert) { return absl::StrCat("layer ", layer, " expert ", expert); }

// pwrite(2) until every byte is written.
absl::Status WriteAll(int fd, const std::string& path, const std::byte* data, uint64_t size, uint64_t offset) {
  while (size > 0) {
    ssize_t n = ::pwrite(fd, data, size, static_cast<off_t>(offset));
    if (n < 0) {
      if (errno == EINTR) continue;
      return absl::ErrnoToStatus(errno, absl::StrCat("cannot write ", size, " bytes at offset ", offset, " of ", path,
                                                     errno == ENOSPC ? " (the disk is full)" : ""));
    }
    data += n;
    size -= static_cast<uint64_t>(n);
    offset += static_cast<uint64_t>(n);
  }
  return absl::OkStatus();
}

// pread(2) until every byte is read; the caller has checked the file size,
// so an early end of file means it shrank underneath us.
absl::Status ReadAll(int fd, const std::string& path, std::byte* data, uint64_t size, uint64_t offset) {
  const uint64_t start = offset;
  const uint64_t total = size;
  while (size > 0) {
    ssize_t n = ::pread(fd, data, size, static_cast<off_t>(offset));
    if (n < 0) {
      if (errno == EINTR) continue;
      return ReadErrorStatus(path, start, total, errno);
    }
    if (n == 0) return UnexpectedEofStatus(path, start, total, offset, size);
    data += n;
    size -= static_cast<uint64_t>(n);
    offset += static_cast<uint64_t>(n);
  }
  return absl::OkStatus();
}

std::string DirName(const std::string& path) {
  size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

}  // namespace

uint64_t ExpertFileLayout::slot_bytes() const {
  if (alignment == 0) return expert_bytes();
  return AlignUp(expert_bytes(), alignment);
}

uint64_t Xxh64(absl::Span<const std::byte> bytes, uint64_t seed) { return XXH64(bytes.data(), bytes.size(), seed); }

// ---------------------------------------------------------------------------
// ExpertFileWriter

struct ExpertFileWriter::State {
  std::string path;
  std::string temp_path;
  UniqueFd fd;
  ExpertFileLayout layout;
  uint64_t data_offset = 0;
  uint64_t num_bundles = 0;
  std::vector<ExpertExtent> index;  // [layer * num_experts + expert]
  bool finished = false;
};

absl::StatusOr<std::unique_ptr<ExpertFileWriter>> ExpertFileWriter::Create(const std::string& path,
                                                                            const ExpertFileLayout& layout) {
  RETURN_IF_ERROR(
      CheckLayout(layout, absl::StatusCode::kInvalidArgument, absl::StrCat("cannot pack ", path, ": bad layout")));
  auto state = std::make_unique<State>();
  state->path = path;
  state->layout = layout;
  state->data_offset = DataOffset(layout, kVersion3);
  state->index.resize(uint64_t{layout.num_layers} * layout.num_experts);
  // A unique temporary beside the target: same filesystem, so the final
  // rename is atomic, and two packers never share a temporary.
  std::string temp = absl::StrCat(path, ".partial-XXXXXX");
  int fd = ::mkstemp(temp.data());
  if (fd < 0) {
    return absl::ErrnoToStatus(errno, absl::StrCat("cannot create a temporary file beside ", path,
                                                   " (is its directory writable?)"));
  }
  state->fd = UniqueFd(fd);
  state->temp_path = std::move(temp);
  // mkstemp creates 0600; the packed file is meant to be shared read-only.
  ::fchmod(fd, 0644);
  auto writer = std::unique_ptr<ExpertFileWriter>(new ExpertFileWriter());
  writer->state_ = std::move(state);
  return writer;
}

ExpertFileWriter::~ExpertFileWriter() {
  if (state_ != nullptr && !state_->finished && !state_->temp_path.empty()) {
    state_->fd.Reset();
    ::unlink(state_->temp_path.c_str());
  }
}

absl::Status ExpertFileWriter::Add(int layer, int expert, absl::Span<const std::byte> bundle) {
  return Add(layer, expert, state_->layout.dtypes, bundle);
}

absl::Status ExpertFileWriter::Add(int layer, int expert, const BundleDtypes& dtypes,
                                   absl::Span<const std::byte> bundle) {
  State& s = *state_;
  if (s.finished) {
    return absl::FailedPreconditionError(absl::StrCat(s.path, ": Add(", ExpertName(layer, expert), ") after Finish"));
  }
  if (layer < 0 || static_cast<uint32_t>(layer) >= s.layout.num_layers || expert < 0 ||
      static_cast<uint32_t>(expert) >= s.layout.num_experts) {
    return absl::InvalidArgumentError(absl::StrCat(s.path, ": ", ExpertName(layer, expert),
                                                   " is out of range: the layout has ", s.layout.num_layers,
                                                   " layers of ", s.layout.num_experts, " experts"));
  }
  if (std::string problem = BundleDtypesProblem(dtypes, s.layout.hidden_size, s.layout.intermediate_size);
      !problem.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(s.path, ": ", ExpertName(layer, expert), ": ", problem));
  }
  const uint64_t bundle_bytes = ExpertBundleLayout(dtypes, s.layout.hidden_size, s.layout.intermediate_size).bytes;
  if (bundle.size() != bundle_bytes) {
    return absl::InvalidArgumentError(absl::StrCat(s.path, ": ", ExpertName(layer, expert), " bundle has ",
                                                   bundle.size(), " bytes, expected ", bundle_bytes, " for ",
                                                   BundleDtypesName(dtypes), " (gate/up/down)"));
  }
  if (bundle_bytes > s.layout.expert_bytes()) {
    return absl::InvalidArgumentError(absl::StrCat(
        s.path, ": ", ExpertName(layer, expert), " bundle of ", BundleDtypesName(dtypes), " has ", bundle_bytes,
        " bytes, more than the slot's ", s.layout.expert_bytes(), " (", BundleDtypesName(s.layout.dtypes),
        "): give the layout the widest dtype of each matrix"));
  }
  ExpertExtent& extent = s.index[static_cast<uint64_t>(layer) * s.layout.num_experts + static_cast<uint64_t>(expert)];
  if (extent.length != 0) {
    return absl::AlreadyExistsError(absl::StrCat(s.path, ": ", ExpertName(layer, expert), " was already added"));
  }
  const uint64_t offset = s.data_offset + s.num_bundles * s.layout.slot_bytes();
  RETURN_IF_ERROR(WriteAll(s.fd.get(), s.temp_path, bundle.data(), bundle.size(), offset));
  extent.offset = offset;
  extent.length = bundle.size();
  extent.checksum = HashBundle(BundleHash::kXxh3, bundle);
  extent.dtypes = dtypes;
  ++s.num_bundles;
  return absl::OkStatus();
}

absl::Status ExpertFileWriter::Finish() {
  State& s = *state_;
  if (s.finished) return absl::FailedPreconditionError(absl::StrCat(s.path, ": Finish called twice"));
  const ExpertFileLayout& l = s.layout;

  std::vector<std::byte> index(IndexBytes(l, kVersion3));
  for (size_t i = 0; i < s.index.size(); ++i) {
    std::byte* e = index.data() + i * kIndexEntryBytesV2;
    const ExpertExtent& x = s.index[i];
    if (x.length == 0) continue;  // an absent expert: 32 zero bytes
    StoreU64(e, x.offset);
    StoreU64(e + 8, x.length);
    StoreU64(e + 16, x.checksum);
    // Add checked that each dtype has a number.
    e[kEntryOffDtypes] = static_cast<std::byte>(*FileDtypeCode(x.dtypes.gate));
    e[kEntryOffDtypes + 1] = static_cast<std::byte>(*FileDtypeCode(x.dtypes.up));
    e[kEntryOffDtypes + 2] = static_cast<std::byte>(*FileDtypeCode(x.dtypes.down));
  }
  const uint64_t file_bytes = s.data_offset + s.num_bundles * l.slot_bytes();

  Page header{};
  std::memcpy(header.data() + kOffMagic, kMagic, sizeof(kMagic));
  StoreU32(header.data() + kOffVersion, kVersion3);
  StoreU32(header.data() + kOffHeaderBytes, kHeaderBytes);
  StoreU64(header.data() + kOffFingerprint, l.model_fingerprint);
  // CheckLayout at Create saw that each has a number.
  header[kOffDtype] = static_cast<std::byte>(*FileDtypeCode(l.dtypes.gate));
  header[kOffDtype + 1] = static_cast<std::byte>(*FileDtypeCode(l.dtypes.up));
  header[kOffDtype + 2] = static_cast<std::byte>(*FileDtypeCode(l.dtypes.down));
  StoreU32(header.data() + kOffNumLayers, l.num_layers);
  StoreU32(header.data() + kOffNumExperts, l.num_experts);
  StoreU32(header.data() + kOffHiddenSize, l.hidden_size);
  StoreU32(header.data() + kOffIntermediateSize, l.intermediate_size);
  StoreU32(header.data() + kOffAlignment, l.alignment);
  StoreU64(header.data() + kOffExpertBytes, l.expert_bytes());
  StoreU64(header.data() + kOffSlotBytes, l.slot_bytes());
  StoreU64(header.data() + kOffIndexOffset, kHeaderBytes);
  StoreU64(header.data() + kOffIndexBytes, index.size());
  StoreU64(header.data() + kOffIndexChecksum, Xxh64(index));
  StoreU64(header.data() + kOffDataOffset, s.data_offset);
  StoreU64(header.data() + kOffNumBundles, s.num_bundles);
  StoreU64(header.data() + kOffFileBytes, file_bytes);
  StoreU64(header.data() + kOffHeaderChecksum, Xxh64(absl::MakeConstSpan(header.data(), kOffHeaderChecksum)));

  RETURN_IF_ERROR(WriteAll(s.fd.get(), s.temp_path, index.data(), index.size(), kHeaderBytes));
  RETURN_IF_ERROR(WriteAll(s.fd.get(), s.temp_path, header.data(), header.size(), 0));
  // Extends the file over the last slot's padding (and the gap after the
  // index when there are no bundles); the kernel reads the holes as zeros.
  if (::ftruncate(s.fd.get(), static_cast<off_t>(file_bytes)) != 0) {
    return absl::ErrnoToStatus(errno, absl::StrCat("cannot size ", s.temp_path, " to ", file_bytes, " bytes"));
  }
  // Data before name: after a crash the final path holds either the old file
  // or the whole new one.
  if (::fsync(s.fd.get()) != 0) {
    return absl::ErrnoToStatus(errno, absl::StrCat("cannot fsync ", s.temp_path));
  }
  s.fd.Reset();
  if (::rename(s.temp_path.c_str(), s.path.c_str()) != 0) {
    return absl::ErrnoToStatus(errno, absl::StrCat("cannot rename ", s.temp_path, " to ", s.path));
  }
  s.finished = true;
  UniqueFd dir(::open(DirName(s.path).c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (dir.valid()) ::fsync(dir.get());  // best effort: the file itself is complete
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------
// ExpertFile

absl::StatusOr<std::unique_ptr<ExpertFile>> ExpertFile::Open(const std::string& path,
                                                             std::optional<uint64_t> expected_fingerprint) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) {
    return absl::ErrnoToStatus(errno, absl::StrCat("cannot open packed expert file ", path,
                                                   errno == ENOENT ? " (run `expertd pack` to create it)" : ""));
  }
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return absl::ErrnoToStatus(errno, absl::StrCat("cannot stat ", path));
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  auto corrupt = [&](absl::string_view what) {
    return absl::DataLossError(absl::StrCat(path, ": not a valid packed expert file: ", what, "; re-pack it"));
  };

  if (size < kHeaderBytes) {
    return corrupt(absl::StrCat("it has ", size, " bytes, fewer than the ", kHeaderBytes, "-byte header"));
  }
  Page header;
  RETURN_IF_ERROR(ReadAll(fd.get(), path, header.data(), header.size(), 0));
  const std::byte* h = header.data();
  if (std::memcmp(h + kOffMagic, kMagic, sizeof(kMagic)) != 0) {
    return corrupt("bad magic (expected \"EXPERTD1\" at offset 0)");
  }
  const uint64_t header_checksum = Xxh64(absl::MakeConstSpan(h, kOffHeaderChecksum));
  if (header_checksum != LoadU64(h + kOffHeaderChecksum)) {
    return corrupt(absl::StrCat("header checksum mismatch (XXH64 of bytes [0, ", kOffHeaderChecksum, ") is ",
                                Hex(header_checksum), ", header says ", Hex(LoadU64(h + kOffHeaderChecksum)),
                                "): the header is corrupted"));
  }
  const uint32_t version = LoadU32(h + kOffVersion);
  if (version != kVersion1 && version != kVersion2 && version != kVersion3) {
    return absl::FailedPreconditionError(absl::StrCat(path, ": packed file version ", version,
                                                      " is not supported (this build reads versions ", kVersion1,
                                                      " to ", kVersion3, "); re-pack it with this build"));
  }
  if (LoadU32(h + kOffHeaderBytes) != kHeaderBytes) {
    return corrupt(absl::StrCat("header_bytes is ", LoadU32(h + kOffHeaderBytes), ", expected ", kHeaderBytes));
  }
  for (size_t i = kFieldsEnd; i < kOffHeaderChecksum; ++i) {
    if (h[i] != std::byte{0}) return corrupt(absl::StrCat("reserved header byte ", i, " is not zero"));
  }

  auto file = std::unique_ptr<ExpertFile>(new ExpertFile());
  file->path_ = path;
  file->version_ = version;
  ExpertFileLayout& l = file->layout_;
  l.model_fingerprint = LoadU64(h + kOffFingerprint);
  if (version == kVersion1) {
    absl::StatusOr<DType> dtype = DTypeOfFileCode(LoadU32(h + kOffDtype));
    if (!dtype.ok()) return corrupt(absl::StrCat("bad header: ", dtype.status().message()));
    l.dtypes = BundleDtypes::Uniform(*dtype);
  } else {
    const char* names[] = {"gate", "up", "down"};
    DType* fields[] = {&l.dtypes.gate, &l.dtypes.up, &l.dtypes.down};
    for (int m = 0; m < 3; ++m) {
      absl::StatusOr<DType> dtype = DTypeOfFileCode(static_cast<uint32_t>(h[kOffDtype + m]));
      if (!dtype.ok()) return corrupt(absl::StrCat("bad header: the slot's ", names[m], " ", dtype.status().message()));
      *fields[m] = *dtype;
    }
    if (h[kOffDtype + 3] != std::byte{0}) return corrupt("reserved header byte 27 is not zero");
  }
  l.num_layers = LoadU32(h + kOffNumLayers);
  l.num_experts = LoadU32(h + kOffNumExperts);
  l.hidden_size = LoadU32(h + kOffHiddenSize);
  l.intermediate_size = LoadU32(h + kOffIntermediateSize);
  l.alignment = LoadU32(h + kOffAlignment);
  RETURN_IF_ERROR(CheckLayout(l, absl::StatusCode::kDataLoss,
                              absl::StrCat(path, ": not a valid packed expert file: bad header")));
  auto expect_field = [&](absl::string_view name, uint64_t got, uint64_t want) {
    return got == want ? absl::OkStatus()
                       : corrupt(absl::StrCat(name, " is ", got, ", the header's dimensions give ", want));
  };
  RETURN_IF_ERROR(expect_field("expert_bytes", LoadU64(h + kOffExpertBytes), l.expert_bytes()));
  RETURN_IF_ERROR(expect_field("slot_bytes", LoadU64(h + kOffSlotBytes), l.slot_bytes()));
  RETURN_IF_ERROR(expect_field("index_offset", LoadU64(h + kOffIndexOffset), kHeaderBytes));
  RETURN_IF_ERROR(expect_field("index_bytes", LoadU64(h + kOffIndexBytes), IndexBytes(l, version)));
  RETURN_IF_ERROR(expect_field("data_offset", LoadU64(h + kOffDataOffset), DataOffset(l, version)));
  const uint64_t data_offset = DataOffset(l, version);
  const uint64_t num_bundles = LoadU64(h + kOffNumBundles);
  const uint64_t num_entries = uint64_t{l.num_layers} * l.num_experts;
  if (num_bundles > num_entries) {
    return corrupt(absl::StrCat("num_bundles ", num_bundles, " exceeds the index's ", num_entries, " entries"));
  }
  const uint64_t slot_bytes = l.slot_bytes();
  // Dimensions from a damaged or hostile header can make the size wrap past
  // 2^64, and every extent would then pass the size checks below.
  if (num_bundles > 0 && slot_bytes > (UINT64_MAX - data_offset) / num_bundles) {
    return corrupt(absl::StrCat(num_bundles, " bundles of ", slot_bytes, " bytes after offset ", data_offset,
                                " overflow a 64-bit file size"));
  }
  const uint64_t file_bytes = data_offset + num_bundles * slot_bytes;
  RETURN_IF_ERROR(expect_field("file_bytes", LoadU64(h + kOffFileBytes), file_bytes));

  const uint64_t index_end = kHeaderBytes + IndexBytes(l, version);
  if (size < index_end) {
    return absl::DataLossError(absl::StrCat(path, " is truncated: ", size, " bytes, but its index ends at ",
                                            index_end, " and the file should have ", file_bytes,
                                            " bytes; re-pack it"));
  }
  std::vector<std::byte> index(IndexBytes(l, version));
  RETURN_IF_ERROR(ReadAll(fd.get(), path, index.data(), index.size(), kHeaderBytes));
  const uint64_t index_checksum = Xxh64(index);
  if (index_checksum != LoadU64(h + kOffIndexChecksum)) {
    return corrupt(absl::StrCat("index checksum mismatch (XXH64 ", Hex(index_checksum), ", header says ",
                                Hex(LoadU64(h + kOffIndexChecksum)), "): the index is corrupted"));
  }

  // Each bundle owns one slot of the data region: aligned, inside
  // file_bytes, and no two share one.
  file->index_.resize(num_entries);
  std::vector<bool> slot_used(num_bundles, false);
  uint64_t present = 0;
  int first_past_layer = -1, first_past_expert = -1;
  uint64_t first_past_offset = UINT64_MAX;
  const uint64_t entry_bytes = IndexEntryBytes(version);
  for (uint64_t i = 0; i < num_entries; ++i) {
    const std::byte* e = index.data() + i * entry_bytes;
    ExpertExtent& x = file->index_[i];
    x.offset = LoadU64(e);
    x.length = LoadU64(e + 8);
    x.checksum = LoadU64(e + 16);
    const int layer = static_cast<int>(i / l.num_experts);
    const int expert = static_cast<int>(i % l.num_experts);
    if (x.length == 0) {
      const bool zero = std::all_of(e, e + entry_bytes, [](std::byte b) { return b == std::byte{0}; });
      if (!zero) {
        return corrupt(absl::StrCat("absent ", ExpertName(layer, expert),
                                    " has a nonzero offset, checksum or dtype"));
      }
      continue;
    }
    if (version == kVersion1) {
      x.dtypes = l.dtypes;
    } else {
      const char* names[] = {"gate", "up", "down"};
      DType* fields[] = {&x.dtypes.gate, &x.dtypes.up, &x.dtypes.down};
      for (int m = 0; m < 3; ++m) {
        absl::StatusOr<DType> dtype = DTypeOfFileCode(static_cast<uint32_t>(e[kEntryOffDtypes + m]));
        if (!dtype.ok()) {
          return corrupt(absl::StrCat(ExpertName(layer, expert), " has ", names[m], " ", dtype.status().message()));
        }
        *fields[m] = *dtype;
      }
      for (uint64_t b = kEntryOffDtypes + 3; b < entry_bytes; ++b) {
        if (e[b] != std::byte{0}) {
          return corrupt(absl::StrCat(ExpertName(layer, expert), "'s index entry has nonzero reserved byte ", b));
        }
      }
      if (std::string problem = BundleDtypesProblem(x.dtypes, l.hidden_size, l.intermediate_size);
          !problem.empty()) {
        return corrupt(absl::StrCat(ExpertName(layer, expert), ": ", problem));
      }
    }
    const uint64_t bundle_bytes = ExpertBundleLayout(x.dtypes, l.hidden_size, l.intermediate_size).bytes;
    if (x.length != bundle_bytes) {
      return corrupt(absl::StrCat(ExpertName(layer, expert), " has length ", x.length, ", but a bundle of ",
                                  BundleDtypesName(x.dtypes), " (gate/up/down) has ", bundle_bytes, " bytes"));
    }
    if (x.length > l.expert_bytes()) {
      return corrupt(absl::StrCat(ExpertName(layer, expert), " is a bundle of ", BundleDtypesName(x.dtypes), " of ",
                                  x.length, " bytes, larger than the slot's ", l.expert_bytes(), " (",
                                  BundleDtypesName(l.dtypes), ")"));
    }
    if (x.offset < data_offset || (x.offset - data_offset) % slot_bytes != 0 ||
        (x.offset - data_offset) / slot_bytes >= num_bundles) {
      return corrupt(absl::StrCat(ExpertName(layer, expert), " has offset ", x.offset, ", which is not one of the ",
                                  num_bundles, " slots of ", slot_bytes, " bytes from offset ", data_offset));
    }
    const uint64_t slot = (x.offset - data_offset) / slot_bytes;
    if (slot_used[slot]) {
      return corrupt(absl::StrCat(ExpertName(layer, expert), " shares offset ", x.offset, " with another expert"));
    }
    slot_used[slot] = true;
    ++present;
    if (x.offset + slot_bytes > size && x.offset < first_past_offset) {
      first_past_offset = x.offset;
      first_past_layer = layer;
      first_past_expert = expert;
    }
  }
  for (const ExpertExtent& x : file->index_) {
    if (x.length == 0) continue;
    auto same = std::find_if(file->dtype_mix_.begin(), file->dtype_mix_.end(),
                             [&](const BundleDtypesCount& c) { return c.dtypes == x.dtypes; });
    if (same == file->dtype_mix_.end()) {
      file->dtype_mix_.push_back({x.dtypes, 1, x.length});
    } else {
      ++same->experts;
    }
  }
  if (present != num_bundles) {
    return corrupt(absl::StrCat("the index lists ", present, " bundles, the header says ", num_bundles));
  }
  if (size < file_bytes) {
    return absl::DataLossError(absl::StrCat(
        path, " is truncated: ", size, " bytes of ", file_bytes, "; ", ExpertName(first_past_layer, first_past_expert),
        " at offset ", first_past_offset, " ends past the end of the file; re-pack it"));
  }
  if (size > file_bytes) {
    return corrupt(absl::StrCat("it has ", size, " bytes but the header says ", file_bytes,
                                " (trailing data: not the file the packer wrote)"));
  }

  if (expected_fingerprint.has_value() && *expected_fingerprint != l.model_fingerprint) {
    return absl::FailedPreconditionError(
        absl::StrCat(path, " was packed from a different checkpoint (fingerprint ", Hex(l.model_fingerprint),
                     ", the model's is ", Hex(*expected_fingerprint), "); delete it or re-pack with `expertd pack`"));
  }
  return file;
}

absl::StatusOr<ExpertExtent> ExpertFile::Find(int layer, int expert) const {
  if (layer < 0 || static_cast<uint32_t>(layer) >= layout_.num_layers || expert < 0 ||
      static_cast<uint32_t>(expert) >= layout_.num_experts) {
    return absl::InvalidArgumentError(absl::StrCat(path_, ": ", ExpertName(layer, expert),
                                                   " is out of range: the file has ", layout_.num_layers,
                                                   " layers of ", layout_.num_experts, " experts"));
  }
  const ExpertExtent& extent =
      index_[static_cast<uint64_t>(layer) * layout_.num_experts + static_cast<uint64_t>(expert)];
  if (extent.length == 0) {
    return absl::NotFoundError(absl::StrCat(path_, ": ", ExpertName(layer, expert),
                                            " is not in the file (a dense layer, or not packed)"));
  }
  return extent;
}

absl::StatusOr<BundleLayout> ExpertFile::Bundle(int layer, int expert) const {
  ASSIGN_OR_RETURN(ExpertExtent extent, Find(layer, expert));
  return ExpertBundleLayout(extent.dtypes, layout_.hidden_size, layout_.intermediate_size);
}

std::string DescribeDtypeMix(const std::vector<BundleDtypesCount>& mix) {
  std::string out;
  for (const BundleDtypesCount& c : mix) {
    absl::StrAppend(&out, out.empty() ? "" : ", ", BundleDtypesName(c.dtypes), " x ", c.experts);
  }
  return out.empty() ? "no experts" : out;
}

absl::Status ExpertFile::Verify(int layer, int expert, absl::Span<const std::byte> bundle) const {
  ASSIGN_OR_RETURN(ExpertExtent extent, Find(layer, expert));
  if (bundle.size() < extent.length) {
    return absl::InvalidArgumentError(absl::StrCat(path_, ": ", ExpertName(layer, expert), ": got ", bundle.size(),
                                                   " bytes to verify, expected ", extent.length));
  }
  // A slot may be longer than the bundle (alignment padding); only the
  // bundle's bytes are checksummed.
  return CheckChecksum(layer, expert, HashBundle(bundle_hash(), bundle.first(extent.length)));
}

absl::Status ExpertFile::CheckChecksum(int layer, int expert, uint64_t checksum) const {
  ASSIGN_OR_RETURN(ExpertExtent extent, Find(layer, expert));
  if (checksum != extent.checksum) {
    return absl::DataLossError(absl::StrCat(path_, ": ", ExpertName(layer, expert), " at offset ", extent.offset,
                                            " is corrupt (", BundleHashName(bundle_hash()), " ", Hex(checksum),
                                            ", expected ", Hex(extent.checksum),
                                            "); re-pack the file or check the disk"));
  }
  return absl::OkStatus();
}

}  // namespace expertd::io
