#include "formats/safetensors.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "base/status_macros.h"
#include "nlohmann/json.hpp"

namespace expertd::formats {
namespace {

struct DtypeInfo {
  const char* name;
  SafetensorsDtype dtype;
  size_t size;
};

constexpr DtypeInfo kDtypes[] = {
    {"F64", SafetensorsDtype::kF64, 8},  {"F32", SafetensorsDtype::kF32, 4}, {"F16", SafetensorsDtype::kF16, 2},
    {"BF16", SafetensorsDtype::kBF16, 2}, {"I64", SafetensorsDtype::kI64, 8}, {"I32", SafetensorsDtype::kI32, 4},
    {"I16", SafetensorsDtype::kI16, 2},  {"I8", SafetensorsDtype::kI8, 1},   {"U8", SafetensorsDtype::kU8, 1},
    {"BOOL", SafetensorsDtype::kBool, 1},
};

// Headers of real checkpoints are well under a megabyte; a larger claim means
// a corrupt length prefix, and refusing it avoids parsing garbage.
constexpr uint64_t kMaxHeaderBytes = 100ull << 20;

// The most one pread asks for (1 GiB).
constexpr size_t kMaxReadBytes = size_t{1} << 30;

absl::Status Corrupt(const std::string& path, absl::string_view what) {
  return absl::DataLossError(absl::StrCat(path, ": not a valid safetensors file: ", what));
}

}  // namespace

const char* SafetensorsDtypeName(SafetensorsDtype dtype) {
  for (const auto& info : kDtypes) {
    if (info.dtype == dtype) return info.name;
  }
  return "?";
}

size_t SafetensorsDtypeSize(SafetensorsDtype dtype) {
  for (const auto& info : kDtypes) {
    if (info.dtype == dtype) return info.size;
  }
  return 0;
}

std::optional<DType> WeightDType(SafetensorsDtype dtype) {
  switch (dtype) {
    case SafetensorsDtype::kF32: return DType::kF32;
    case SafetensorsDtype::kBF16: return DType::kBF16;
    case SafetensorsDtype::kF16: return DType::kF16;
    default: return std::nullopt;
  }
}

int64_t TensorInfo::num_elements() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::Open(const std::string& path) {
  auto file = std::unique_ptr<SafetensorsFile>(new SafetensorsFile());
  file->path_ = path;
  file->fd_ = io::UniqueFd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!file->fd_.valid()) {
    return absl::NotFoundError(absl::StrCat("cannot open ", path, ": ", std::strerror(errno)));
  }
  struct stat st {};
  if (::fstat(file->fd_.get(), &st) != 0) {
    return absl::InternalError(absl::StrCat("cannot stat ", path, ": ", std::strerror(errno)));
  }
  if (!S_ISREG(st.st_mode)) return Corrupt(path, "not a regular file");
  file->file_size_ = static_cast<uint64_t>(st.st_size);
  file->modified_ = st.st_mtim;
  const uint64_t file_size = file->file_size_;
  if (file_size < 8) return Corrupt(path, "shorter than the 8-byte header length");
  std::byte length_bytes[8];
  RETURN_IF_ERROR(file->ReadAt(0, length_bytes));
  uint64_t header_len = 0;
  std::memcpy(&header_len, length_bytes, 8);  // little-endian on every platform we build for
  if (header_len > kMaxHeaderBytes || header_len > file_size - 8) {
    return Corrupt(path, absl::StrCat("header length ", header_len, " exceeds the file size ",
                                      file_size, " (truncated file?)"));
  }
  file->header_json_.resize(header_len);
  RETURN_IF_ERROR(file->ReadAt(8, absl::MakeSpan(reinterpret_cast<std::byte*>(file->header_json_.data()), header_len)));
  const uint64_t data_start = 8 + header_len;
  const uint64_t data_size = file_size - data_start;

  nlohmann::json header = nlohmann::json::parse(file->header_json_, /*cb=*/nullptr, /*allow_exceptions=*/false);
  if (header.is_discarded() || !header.is_object()) {
    return Corrupt(path, "the header is not a JSON object");
  }

  std::vector<std::pair<uint64_t, uint64_t>> ranges;
  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") {
      if (!entry.is_object()) return Corrupt(path, "__metadata__ is not an object");
      for (const auto& [key, value] : entry.items()) {
        if (!value.is_string()) return Corrupt(path, absl::StrCat("metadata '", key, "' is not a string"));
        file->metadata_[key] = value.get<std::string>();
      }
      continue;
    }
    auto bad = [&](absl::string_view what) {
      return Corrupt(path, absl::StrCat("tensor '", name, "': ", what));
    };
    if (!entry.is_object()) return bad("entry is not an object");
    auto dtype_it = entry.find("dtype");
    auto shape_it = entry.find("shape");
    auto offsets_it = entry.find("data_offsets");
    if (dtype_it == entry.end() || !dtype_it->is_string()) return bad("missing dtype");
    if (shape_it == entry.end() || !shape_it->is_array()) return bad("missing shape");
    if (offsets_it == entry.end() || !offsets_it->is_array() || offsets_it->size() != 2) {
      return bad("missing data_offsets [begin, end]");
    }
    TensorInfo view;
    view.name = name;
    const std::string dtype_name = dtype_it->get<std::string>();
    const DtypeInfo* info = nullptr;
    for (const auto& candidate : kDtypes) {
      if (dtype_name == candidate.name) info = &candidate;
    }
    if (info == nullptr) return bad(absl::StrCat("unsupported dtype ", dtype_name));
    view.dtype = info->dtype;
    // Overflow-checked element count: a hostile shape must not wrap around.
    unsigned __int128 elements = 1;
    for (const auto& dim : *shape_it) {
      if (!dim.is_number_integer() || dim.get<int64_t>() < 0) return bad("shape has a non-integer or negative dimension");
      view.shape.push_back(dim.get<int64_t>());
      elements *= static_cast<uint64_t>(view.shape.back());
      if (elements > (static_cast<unsigned __int128>(1) << 62)) return bad("shape is absurdly large");
    }
    const auto& offsets = *offsets_it;
    if (!offsets[0].is_number_unsigned() || !offsets[1].is_number_unsigned()) {
      return bad("data_offsets are not unsigned integers");
    }
    const uint64_t begin = offsets[0].get<uint64_t>();
    const uint64_t end = offsets[1].get<uint64_t>();
    if (begin > end) return bad("data_offsets begin after they end");
    if (end > data_size) {
      return bad(absl::StrCat("data ends at byte ", end, " but the data section has only ", data_size,
                              " bytes (truncated file?)"));
    }
    const unsigned __int128 expected_bytes = elements * info->size;
    if (expected_bytes != end - begin) {
      return bad(absl::StrCat("shape [", absl::StrJoin(view.shape, ", "), "] of ", dtype_name, " needs ",
                              static_cast<uint64_t>(expected_bytes), " bytes but data_offsets span ",
                              end - begin));
    }
    view.offset = data_start + begin;
    view.size_bytes = end - begin;
    ranges.emplace_back(begin, end);
    file->tensors_.emplace(name, std::move(view));
  }
  std::sort(ranges.begin(), ranges.end());
  for (size_t i = 1; i < ranges.size(); ++i) {
    if (ranges[i].first < ranges[i - 1].second) return Corrupt(path, "two tensors' data overlap");
  }
  return file;
}

absl::Status SafetensorsFile::ReadAt(uint64_t offset, absl::Span<std::byte> out) const {
  if (offset > file_size_ || out.size() > file_size_ - offset) {
    return absl::OutOfRangeError(absl::StrCat(path_, ": read of ", out.size(), " bytes at offset ", offset,
                                              " is beyond the file's ", file_size_, " bytes"));
  }
  size_t done = 0;
  while (done < out.size()) {
    // Linux moves at most 0x7ffff000 bytes per call; a bounded request also
    // keeps each syscall short.
    const size_t want = std::min(out.size() - done, kMaxReadBytes);
    const ssize_t got = ::pread(fd_.get(), out.data() + done, want, static_cast<off_t>(offset + done));
    if (got < 0) {
      if (errno == EINTR) continue;
      return io::ReadErrorStatus(path_, offset, out.size(), errno);
    }
    if (got == 0) {
      return io::UnexpectedEofStatus(path_, offset, out.size(), offset + done, out.size() - done);
    }
    done += static_cast<size_t>(got);
  }
  return absl::OkStatus();
}

absl::Status SafetensorsFile::CheckUnchanged() const {
  struct stat st {};
  if (::fstat(fd_.get(), &st) != 0) {
    return absl::InternalError(absl::StrCat("cannot stat ", path_, ": ", std::strerror(errno)));
  }
  const bool same_time = st.st_mtim.tv_sec == modified_.tv_sec && st.st_mtim.tv_nsec == modified_.tv_nsec;
  if (static_cast<uint64_t>(st.st_size) != file_size_ || !same_time) {
    return absl::AbortedError(absl::StrCat(path_, " changed while it was being read (", file_size_, " bytes when opened, ",
                                           st.st_size, " now", same_time ? "" : ", and a new modification time",
                                           "); load the model again once the file is complete"));
  }
  return absl::OkStatus();
}

const TensorInfo* SafetensorsFile::Find(const std::string& name) const {
  auto it = tensors_.find(name);
  return it == tensors_.end() ? nullptr : &it->second;
}

absl::Status WriteSafetensors(const std::string& path, const std::vector<TensorToWrite>& tensors,
                              const std::map<std::string, std::string>& metadata) {
  std::vector<const TensorToWrite*> ordered;
  for (const auto& t : tensors) ordered.push_back(&t);
  std::sort(ordered.begin(), ordered.end(),
            [](const TensorToWrite* a, const TensorToWrite* b) { return a->name < b->name; });
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (const TensorToWrite* t : ordered) {
    int64_t elements = 1;
    for (int64_t d : t->shape) elements *= d;
    if (static_cast<uint64_t>(elements) * SafetensorsDtypeSize(t->dtype) != t->bytes.size()) {
      return absl::InvalidArgumentError(absl::StrCat("tensor ", t->name, ": shape does not match its ",
                                                     t->bytes.size(), " bytes"));
    }
    header[t->name] = {{"dtype", SafetensorsDtypeName(t->dtype)},
                       {"shape", t->shape},
                       {"data_offsets", {offset, offset + t->bytes.size()}}};
    offset += t->bytes.size();
  }
  std::string header_text = header.dump();
  // Pad so the data section starts 8-byte aligned, as HF's writer does.
  while ((8 + header_text.size()) % 8 != 0) header_text.push_back(' ');
  const uint64_t header_len = header_text.size();

  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) return absl::PermissionDeniedError(absl::StrCat("cannot create ", path));
  out.write(reinterpret_cast<const char*>(&header_len), 8);
  out.write(header_text.data(), static_cast<std::streamsize>(header_text.size()));
  for (const TensorToWrite* t : ordered) {
    out.write(reinterpret_cast<const char*>(t->bytes.data()), static_cast<std::streamsize>(t->bytes.size()));
  }
  out.close();
  if (!out) return absl::DataLossError(absl::StrCat("write to ", path, " failed (disk full?)"));
  return absl::OkStatus();
}

}  // namespace expertd::formats
