// ELF64 validation and loading. Images are untrusted files: every offset and size is checked for
// overflow before use, and headers are copied out (memcpy) rather than cast in place.
#include "hv/elf_loader.h"

#include <elf.h>
#include <fmt/format.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>

#include "hv/boot_abi.h"

namespace qosvisor::hv {
namespace {

constexpr uint32_t kXenElfNotePhys32Entry = 18;

// [offset, offset + len) lies inside a buffer of `size` bytes, without overflow.
bool Inside(uint64_t offset, uint64_t len, uint64_t size) {
  return offset <= size && len <= size - offset;
}

std::optional<uint32_t> FindPvhNote(std::span<const uint8_t> note) {
  size_t pos = 0;
  while (pos + sizeof(Elf64_Nhdr) <= note.size()) {
    Elf64_Nhdr nh;
    std::memcpy(&nh, note.data() + pos, sizeof(nh));
    pos += sizeof(nh);
    uint64_t name_len = (uint64_t{nh.n_namesz} + 3) & ~uint64_t{3};
    uint64_t desc_len = (uint64_t{nh.n_descsz} + 3) & ~uint64_t{3};
    if (!Inside(pos, name_len + desc_len, note.size())) return std::nullopt;
    bool xen = nh.n_namesz == 4 && std::memcmp(note.data() + pos, "Xen", 4) == 0;
    if (xen && nh.n_type == kXenElfNotePhys32Entry && nh.n_descsz >= 4) {
      uint32_t entry;
      std::memcpy(&entry, note.data() + pos + name_len, 4);
      return entry;
    }
    pos += name_len + desc_len;
  }
  return std::nullopt;
}

}  // namespace

Result<ElfImage> ParseElf(std::span<const uint8_t> file, uint64_t mem_size,
                          const std::string& what) {
  auto fail = [&](std::string why) {
    return Status::Error(fmt::format("image '{}': {}", what, why));
  };
  if (file.size() < EI_NIDENT || std::memcmp(file.data(), ELFMAG, SELFMAG) != 0) {
    return fail(fmt::format("not an ELF file ({} bytes, no \\x7fELF magic)", file.size()));
  }
  if (file[EI_CLASS] != ELFCLASS64) {
    return fail(file[EI_CLASS] == ELFCLASS32 ? "32-bit ELF (ELFCLASS32); need a 64-bit x86-64 image"
                                             : "unknown ELF class; need ELFCLASS64");
  }
  if (file[EI_DATA] != ELFDATA2LSB) return fail("big-endian ELF; need little endian x86-64");
  if (file.size() < sizeof(Elf64_Ehdr)) {
    return fail(
        fmt::format("truncated: {} bytes, smaller than the 64-byte ELF header", file.size()));
  }
  Elf64_Ehdr eh;
  std::memcpy(&eh, file.data(), sizeof(eh));
  if (eh.e_machine != EM_X86_64) {
    return fail(fmt::format("machine {} is not x86-64 (EM_X86_64 = {})", eh.e_machine, EM_X86_64));
  }
  if (eh.e_type != ET_EXEC) {
    return fail(
        fmt::format("ELF type {} is not ET_EXEC (a static, non-PIE executable)", eh.e_type));
  }
  if (eh.e_phentsize != sizeof(Elf64_Phdr) || eh.e_phnum == 0) {
    return fail("no program headers (or a bad e_phentsize)");
  }
  uint64_t ph_bytes = uint64_t{eh.e_phnum} * sizeof(Elf64_Phdr);
  if (!Inside(eh.e_phoff, ph_bytes, file.size())) {
    return fail(
        fmt::format("truncated: program headers at {:#x}+{:#x} end past the file's {} bytes",
                    eh.e_phoff, ph_bytes, file.size()));
  }

  ElfImage image;
  image.entry = eh.e_entry;
  for (uint16_t i = 0; i < eh.e_phnum; ++i) {
    Elf64_Phdr ph;
    std::memcpy(&ph, file.data() + eh.e_phoff + i * sizeof(Elf64_Phdr), sizeof(ph));
    if (ph.p_type == PT_NOTE && Inside(ph.p_offset, ph.p_filesz, file.size())) {
      if (auto e = FindPvhNote(file.subspan(ph.p_offset, ph.p_filesz))) image.pvh_entry = e;
      continue;
    }
    if (ph.p_type != PT_LOAD || ph.p_memsz == 0) continue;
    if (!Inside(ph.p_offset, ph.p_filesz, file.size())) {
      return fail(
          fmt::format("truncated: segment {} needs file bytes [{:#x}, +{:#x}) but the "
                      "file has {} bytes",
                      i, ph.p_offset, ph.p_filesz, file.size()));
    }
    if (ph.p_filesz > ph.p_memsz) {
      return fail(fmt::format("segment {}: file size {:#x} exceeds memory size {:#x}", i,
                              ph.p_filesz, ph.p_memsz));
    }
    if (ph.p_paddr < QV_BOOT_AREA_END) {
      return fail(fmt::format("segment {} at {:#x} overlaps the VMM boot area [0, {:#x})", i,
                              ph.p_paddr, QV_BOOT_AREA_END));
    }
    if (!Inside(ph.p_paddr, ph.p_memsz, mem_size)) {
      return fail(
          fmt::format("larger than memory: segment {} [{:#x}, +{:#x}) does not fit in "
                      "{} bytes of guest memory",
                      i, ph.p_paddr, ph.p_memsz, mem_size));
    }
    image.segments.push_back(
        {ph.p_paddr, ph.p_offset, ph.p_filesz, ph.p_memsz, (ph.p_flags & PF_X) != 0});
  }
  if (image.segments.empty()) return fail("no PT_LOAD segment");
  std::sort(image.segments.begin(), image.segments.end(),
            [](const ElfSegment& a, const ElfSegment& b) { return a.gpa < b.gpa; });
  for (size_t i = 1; i < image.segments.size(); ++i) {
    const auto& a = image.segments[i - 1];
    const auto& b = image.segments[i];
    if (a.gpa + a.mem_size > b.gpa) {
      return fail(fmt::format("overlapping segments: [{:#x}, {:#x}) and [{:#x}, {:#x})", a.gpa,
                              a.gpa + a.mem_size, b.gpa, b.gpa + b.mem_size));
    }
  }
  bool entry_ok = std::any_of(image.segments.begin(), image.segments.end(), [&](const auto& s) {
    return s.executable && image.entry >= s.gpa && image.entry - s.gpa < s.mem_size;
  });
  if (!entry_ok) {
    return fail(fmt::format("entry point {:#x} is outside every executable segment", image.entry));
  }
  return image;
}

Status CopyElfToGuest(const ElfImage& image, std::span<const uint8_t> file, GuestMemory& mem) {
  for (const auto& s : image.segments) {
    uint8_t* dst = mem.HostPtr(s.gpa, s.mem_size);
    if (dst == nullptr || !Inside(s.file_offset, s.file_size, file.size())) {
      return Status::Error(fmt::format("segment at {:#x} no longer fits", s.gpa));
    }
    std::memcpy(dst, file.data() + s.file_offset, s.file_size);
    std::memset(dst + s.file_size, 0, s.mem_size - s.file_size);
  }
  return Status::Ok();
}

Result<std::vector<uint8_t>> ReadImageFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return Status::Error(fmt::format("image '{}': cannot open: {}", path, std::strerror(errno)));
  }
  std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(in)),
                             std::istreambuf_iterator<char>());
  if (in.bad()) return Status::Error(fmt::format("image '{}': read error", path));
  return bytes;
}

Result<ElfImage> LoadElfFile(const std::string& path, GuestMemory& mem) {
  auto bytes = ReadImageFile(path);
  if (!bytes) return bytes.status();
  auto image = ParseElf(*bytes, mem.size(), path);
  if (!image) return image.status();
  if (Status s = CopyElfToGuest(*image, *bytes, mem); !s) return s;
  return image;
}

}  // namespace qosvisor::hv
