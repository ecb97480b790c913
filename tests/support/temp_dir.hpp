// A temporary folder removed when the object goes, and helpers to fill it.
#pragma once

#include <filesystem>
#include <string>

namespace jobhost::test {

class TempDir {
public:
    TempDir();
    ~TempDir();
    TempDir(const TempDir&) = delete;
    TempDir& operator=(const TempDir&) = delete;
    const std::filesystem::path& path() const noexcept { return path_; }
    std::filesystem::path operator/(const std::string& name) const { return path_ / name; }
    // Writes a file and returns its path.
    std::filesystem::path write(const std::string& name, const std::string& content) const;

private:
    std::filesystem::path path_;
};

// The path of a fixture plugin by file name ("fx_good.so").
std::filesystem::path fixture(const std::string& name);
// Copies fixture plugins into dir (mode 0755) and returns dir.
std::filesystem::path copy_fixtures(const std::filesystem::path& dir, std::initializer_list<const char*> names);
std::string read_file(const std::filesystem::path& file);

} // namespace jobhost::test
