// Plugin files, as jobhost reads them before the dynamic loader sees them: the bytes are written to an anonymous
// memory file and read_plugin_file checks the ELF header and reads the 'jobhost' section's symbol names (Boost.DLL's
// section reader). Properties: it never throws and never crashes on any bytes; a refused file names no symbols;
// what it accepts names at least one. The dynamic loader itself is never reached.
#include "loader/plugin_loader.hpp"
#include "fuzz_check.hpp"

#include <cstdint>
#include <string>
#include <sys/mman.h>
#include <unistd.h>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size > 1 << 20) return 0;
    static int fd = ::memfd_create("fuzz_elf", MFD_CLOEXEC);
    FUZZ_CHECK(fd >= 0, "memfd_create failed");
    FUZZ_CHECK(::ftruncate(fd, 0) == 0, "ftruncate failed");
    FUZZ_CHECK(::pwrite(fd, data, size, 0) == static_cast<ssize_t>(size), "pwrite failed");
    auto info = jobhost::loader::read_plugin_file("/proc/self/fd/" + std::to_string(fd));
    if (info.problem.empty())
        FUZZ_CHECK(!info.symbols.empty(), "a file accepted without a symbol");
    else
        FUZZ_CHECK(info.symbols.empty(), "a refused file still named symbols");
    return 0;
}
