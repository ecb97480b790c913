#include "loader/plugin_loader.hpp"
#include "registry/registry.hpp"

#include "support/process.hpp"
#include "support/temp_dir.hpp"

#include <doctest/doctest.h>

#include <elf.h>
#include <sys/stat.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <map>

using namespace jobhost;
using jobhost::test::contains;
using jobhost::test::TempDir;

namespace {

loader::Discovery discover_one(const char* fixture_name, bool allow_insecure = false) {
    TempDir dir;
    test::copy_fixtures(dir.path(), {fixture_name});
    return loader::discover({dir.path(), allow_insecure});
}

std::string only_problem(const loader::Discovery& d) {
    REQUIRE(d.problems.size() == 1);
    return d.problems.front().to_string();
}

} // namespace

TEST_CASE("a good plugin's job types are all discovered with their declared metadata") {
    auto d = discover_one("fx_good.so");
    CHECK(d.problems.empty());
    CHECK(d.libraries_loaded == 1);
    std::vector<std::string> types;
    for (const auto& t : d.types) types.push_back(t.type);
    CHECK(types.size() == 20);
    auto it = std::find_if(d.types.begin(), d.types.end(), [](const auto& t) { return t.type == "fx.throw"; });
    REQUIRE(it != d.types.end());
    CHECK(it->descriptor.max_retries == 2);
    CHECK(it->descriptor.backoff_initial_ms == 20);
    CHECK(it->abi_version == JOBHOST_ABI_VERSION);
}

TEST_CASE("the example plugins are discovered, several types from one library") {
    auto d = loader::discover({JOBHOST_EXAMPLE_PLUGIN_DIR, false});
    std::set<std::string> types;
    for (const auto& t : d.types) types.insert(t.type);
    for (const char* expected : {"hello", "shell", "text.upper", "text.count", "math.sum", "math.report"})
        CHECK(types.count(expected) == 1);
}

TEST_CASE("a text file named .so is skipped as not a shared library") {
    CHECK(contains(only_problem(discover_one("not_elf.so")), "not_elf.so: not a shared library"));
}

TEST_CASE("a truncated plugin is skipped with its size and where its section table should end") {
    auto p = only_problem(discover_one("truncated.so"));
    CHECK(contains(p, "truncated.so: truncated ELF file: 3000 bytes, but its section table ends at byte"));
}

namespace {

// A copy of a fixture with its ELF header or one section header changed, as a damaged copy or a hostile file has it.
std::string damaged_problem(const std::function<void(Elf64_Ehdr&, std::vector<Elf64_Shdr>&)>& damage) {
    TempDir dir;
    test::copy_fixtures(dir.path(), {"no_section.so"});
    std::ifstream in(dir.path() / "no_section.so", std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    Elf64_Ehdr h;
    std::memcpy(&h, bytes.data(), sizeof h);
    REQUIRE(h.e_shoff + h.e_shnum * sizeof(Elf64_Shdr) <= bytes.size());
    std::vector<Elf64_Shdr> sections(h.e_shnum);
    std::memcpy(sections.data(), bytes.data() + h.e_shoff, sections.size() * sizeof(Elf64_Shdr));
    damage(h, sections);
    std::memcpy(bytes.data(), &h, sizeof h);
    std::memcpy(bytes.data() + h.e_shoff, sections.data(), sections.size() * sizeof(Elf64_Shdr));
    std::filesystem::remove(dir.path() / "no_section.so");
    std::ofstream(dir.path() / "damaged.so", std::ios::binary) << bytes;
    ::chmod((dir.path() / "damaged.so").c_str(), 0644);
    return only_problem(loader::discover({dir.path(), false}));
}

} // namespace

// Found by tests/fuzz/fuzz_elf.cpp: the section reader allocated what the name table's header claimed (3 TB).
TEST_CASE("a plugin whose section claims more bytes than the file holds is refused before its sections are read") {
    auto p = damaged_problem([](Elf64_Ehdr& h, std::vector<Elf64_Shdr>& s) { s[h.e_shstrndx].sh_size = 1ull << 40; });
    CHECK(contains(p, "damaged.so: damaged ELF file: section "));
    CHECK(contains(p, " claims bytes "));
    CHECK(contains(p, "rebuild the plugin"));
}

// Found by tests/fuzz/fuzz_elf.cpp: a symbol table shorter than one symbol made the reader index an empty vector.
TEST_CASE("a plugin whose symbol table is not a whole number of symbols is refused") {
    auto p = damaged_problem([](Elf64_Ehdr&, std::vector<Elf64_Shdr>& s) {
        for (auto& sh : s)
            if (sh.sh_type == SHT_SYMTAB || sh.sh_type == SHT_DYNSYM) sh.sh_size = 5;
    });
    CHECK(contains(p, "damaged ELF file: symbol table (section "));
    CHECK(contains(p, "of 5 bytes, not a whole number of 24-byte symbols"));
}

TEST_CASE("a plugin whose section-name table is outside its section table is refused") {
    auto p = damaged_problem([](Elf64_Ehdr& h, std::vector<Elf64_Shdr>&) { h.e_shstrndx = h.e_shnum + 5; });
    CHECK(contains(p, "damaged ELF file: the section-name table is section"));
    auto q = damaged_problem([](Elf64_Ehdr& h, std::vector<Elf64_Shdr>&) { h.e_shentsize = 40; });
    CHECK(contains(q, "damaged ELF file: no section table it can read"));
}

TEST_CASE("a library without a jobhost section is skipped and told how to declare job types") {
    auto p = only_problem(discover_one("no_section.so"));
    CHECK(contains(p, "no 'jobhost' section"));
    CHECK(contains(p, "JOBHOST_JOB"));
}

TEST_CASE("a plugin built for another ABI major is refused, naming both versions") {
    auto p = only_problem(discover_one("abi_major.so"));
    CHECK(contains(
        p, "abi_major.so: descriptor jobhost_job_abi_major was built for plugin ABI 2.0, this host speaks 1.0"));
    CHECK(contains(p, "rebuild the plugin"));
}

TEST_CASE("a plugin built for a newer ABI minor is refused, naming both versions") {
    auto p = only_problem(discover_one("abi_minor.so"));
    CHECK(contains(p, "built for plugin ABI 1.99, newer than this host's 1.0"));
}

TEST_CASE("a descriptor smaller than the oldest supported is refused") {
    auto p = only_problem(discover_one("small_struct.so"));
    CHECK(contains(p, "has struct_size 24, smaller than the"));
}

TEST_CASE("invalid metadata skips that type alone, and the library's good type still loads") {
    auto d = discover_one("bad_metadata.so");
    REQUIRE(d.types.size() == 1);
    CHECK(d.types[0].type == "fx.meta_ok");
    REQUIRE(d.problems.size() == 5);
    std::string all;
    for (const auto& p : d.problems) all += p.to_string() + "\n";
    CAPTURE(all);
    CHECK(contains(all, "invalid metadata: the job type is empty"));
    CHECK(contains(all, "the job type 'Bad Type!' has the character 'B'"));
    CHECK(contains(all, "(type 'fx.zero_concurrency'): invalid metadata: concurrency must be at least 1, got 0"));
    CHECK(contains(all, "(type 'fx.negative_interval'): invalid metadata: interval must not be negative, got -5000ms"));
    CHECK(contains(all, "(type 'fx.both_schedules'): invalid metadata: both interval and cron are set"));
}

TEST_CASE("the same type declared by two files is reported with both files, and the first is kept") {
    TempDir dir;
    test::copy_fixtures(dir.path(), {"dup_a.so", "dup_b.so"});
    auto d = loader::discover({dir.path(), false});
    REQUIRE(d.types.size() == 1);
    CHECK(d.types[0].file.filename() == "dup_a.so");
    auto p = only_problem(d);
    CHECK(contains(p, "job type 'fx.dup' is declared twice: by " + (dir.path() / "dup_a.so").string() + " and by " +
                          (dir.path() / "dup_b.so").string()));
}

TEST_CASE("a plugin file writable by others is refused unless allow_insecure_plugins is set") {
    TempDir dir;
    test::copy_fixtures(dir.path(), {"fx_good.so"});
    ::chmod((dir.path() / "fx_good.so").c_str(), 0666);
    auto refused = loader::discover({dir.path(), false});
    CHECK(refused.types.empty());
    auto p = only_problem(refused);
    CHECK(contains(p, "is writable by users other than its owner (mode 0666)"));
    CHECK(contains(p, "chmod go-w"));
    CHECK(contains(p, "allow_insecure_plugins"));
    auto allowed = loader::discover({dir.path(), true});
    CHECK(allowed.problems.empty());
    CHECK(allowed.types.size() == 20);
}

TEST_CASE("a plugin folder writable by others is refused as a whole") {
    TempDir dir;
    test::copy_fixtures(dir.path(), {"fx_good.so"});
    ::chmod(dir.path().c_str(), 0777);
    auto d = loader::discover({dir.path(), false});
    CHECK(d.types.empty());
    CHECK(contains(only_problem(d), "the plugin folder " + dir.path().string() + " is writable"));
}

TEST_CASE("a missing plugin folder is a problem, not a crash") {
    auto d = loader::discover({"/nonexistent/plugins", false});
    CHECK(d.types.empty());
    CHECK(contains(only_problem(d), "/nonexistent/plugins: the plugin folder does not exist"));
}

TEST_CASE("a task whose constructor throws is disabled with the exception's message") {
    auto d = discover_one("ctor_throws.so");
    REQUIRE(d.types.size() == 1);
    registry::Registry reg;
    auto built = reg.build(d, config::Config{});
    REQUIRE(built.problems.size() == 1);
    CHECK(contains(built.problems[0].to_string(),
                   "(type 'fx.ctor_throws'): the task could not be created: the task's constructor threw: cannot "
                   "connect to the warehouse; the type is disabled"));
    CHECK_FALSE(reg.find("fx.ctor_throws")->usable());
}

TEST_CASE("validate_config failing or throwing disables the type with the task's message") {
    auto d = discover_one("config_rejects.so");
    {
        registry::Registry reg;
        auto built = reg.build(d, config::Config{});
        REQUIRE(built.problems.size() == 1);
        CHECK(contains(built.problems[0].message, "validate_config: settings.url is required"));
    }
    {
        config::Config cfg;
        cfg.jobs["fx.config_rejects"].settings = {{"url", 5}};
        registry::Registry reg;
        auto built = reg.build(d, cfg);
        REQUIRE(built.problems.size() == 1);
        CHECK(contains(built.problems[0].message, "validate_config threw: settings.url must be a string"));
    }
    {
        config::Config cfg;
        cfg.jobs["fx.config_rejects"].settings = {{"url", "https://example.invalid"}};
        registry::Registry reg;
        CHECK(reg.build(d, cfg).problems.empty());
        CHECK(reg.find("fx.config_rejects")->usable());
    }
}

TEST_CASE("config overrides overlay the plugin's defaults, and provenance says where each value came from") {
    auto d = discover_one("fx_good.so");
    auto parsed = config::parse("[jobs.\"fx.throw\"]\nmax_retries = 9\ncron = \"@hourly\"\n", "c.toml", "/");
    REQUIRE(parsed.ok());
    parsed.config.file = "c.toml";
    registry::Registry reg;
    reg.build(d, parsed.config);
    const auto* t = reg.find("fx.throw");
    REQUIRE(t);
    CHECK(t->declared.max_retries == 2);
    CHECK(t->effective.max_retries == 9);
    CHECK(t->effective.cron == "@hourly");
    CHECK(t->provenance.of("max_retries") == "c.toml:2"); // the key's own line, not its table's
    CHECK(t->provenance.of("cron") == "c.toml:3");
    CHECK(t->provenance.of("concurrency") == "plugin");
}

TEST_CASE("an override that makes a type invalid is reported and leaves the type unusable") {
    auto d = discover_one("fx_good.so");
    config::Config cfg;
    cfg.jobs["fx.ok"].overrides.concurrency = 0;
    registry::Registry reg;
    auto built = reg.build(d, cfg);
    REQUIRE(built.problems.size() == 1);
    CHECK(contains(built.problems[0].message, "concurrency must be at least 1"));
    CHECK_FALSE(reg.find("fx.ok")->usable());
}

TEST_CASE("a library whose static constructor throws, aborts or exits is refused, and discovery goes on") {
    TempDir dir;
    test::copy_fixtures(dir.path(), {"static_throw.so", "static_exit.so", "static_abort.so", "fx_good.so"});
    auto d = loader::discover({dir.path(), false}); // this process survives: the probe took the blows
    CHECK(d.libraries_loaded == 1);
    CHECK(d.types.size() == 20);
    std::map<std::string, std::string> why;
    for (const auto& p : d.problems) why[p.file.filename().string()] = p.message;
    REQUIRE(why.size() == 3);
    CHECK(contains(why["static_throw.so"], "was killed by signal 6 (SIGABRT); it said: terminate called after"));
    CHECK(contains(why["static_throw.so"], "no database at load time"));
    CHECK(contains(why["static_exit.so"], "ended with exit(3)"));
    CHECK(contains(why["static_abort.so"], "was killed by signal 6 (SIGABRT)"));
}

TEST_CASE("the probe names the file that killed it and goes on with the next ones") {
    TempDir dir;
    test::copy_fixtures(dir.path(), {"static_exit.so", "fx_good.so"});
    auto results = loader::probe_files(
        {dir.path() / "static_exit.so", dir.path() / "fx_good.so", dir.path() / "static_exit.so"}, {dir.path(), false});
    REQUIRE(results.size() == 3);
    CHECK(results[0] == "ended with exit(3)");
    CHECK(results[1].empty());
    CHECK(results[2] == "ended with exit(3)");
}

TEST_CASE("a symlinked plugin is checked like the file it points to and its folder, a dangling or looping link is "
          "reported") {
    TempDir dir;
    auto plugins = dir.path() / "plugins";
    auto shared = dir.path() / "shared";
    std::filesystem::create_directories(plugins);
    test::copy_fixtures(shared, {"fx_good.so"});
    std::filesystem::permissions(shared, std::filesystem::perms::all); // 0777: anyone may swap the file
    std::filesystem::create_symlink(shared / "fx_good.so", plugins / "good.so");
    std::filesystem::create_symlink(dir.path() / "nowhere.so", plugins / "dangling.so");
    std::filesystem::create_symlink(plugins / "loop_b.so", plugins / "loop_a.so");
    std::filesystem::create_symlink(plugins / "loop_a.so", plugins / "loop_b.so");
    auto d = loader::discover({plugins, false});
    CHECK(d.types.empty());
    std::map<std::string, std::string> why;
    for (const auto& p : d.problems) why[p.file.filename().string()] = p.message;
    CHECK(contains(why["good.so"], "a symbolic link to " + (shared / "fx_good.so").string()));
    CHECK(contains(why["good.so"], "is writable by users other than its owner"));
    CHECK(contains(why["dangling.so"], "which does not exist or loops back on itself"));
    CHECK(contains(why["loop_a.so"], "which does not exist or loops back on itself"));
    CHECK(contains(why["loop_b.so"], "which does not exist or loops back on itself"));
    std::filesystem::permissions(shared, std::filesystem::perms::owner_all | std::filesystem::perms::group_read |
                                             std::filesystem::perms::group_exec | std::filesystem::perms::others_read |
                                             std::filesystem::perms::others_exec);
    auto fixed = loader::discover({plugins, false});
    CHECK(fixed.types.size() == 20); // the same link into a safe folder loads
}

TEST_CASE("what a plugin said as it killed the probe is in the reason, for each of 200 such files") {
    // The probe's stderr and its "I begin file N" come through two pipes; read in the wrong order, a file's last
    // words were dropped with the previous file's (now and then a reason said only "was killed by signal 6 (SIGABRT)").
    TempDir dir;
    test::copy_fixtures(dir.path(), {"static_throw.so"});
    std::vector<std::filesystem::path> files;
    for (int i = 0; i < 200; ++i) {
        files.push_back(dir.path() / ("t" + std::to_string(i) + ".so"));
        std::filesystem::copy_file(dir.path() / "static_throw.so", files.back());
    }
    auto results = loader::probe_files(files, {dir.path(), false});
    REQUIRE(results.size() == files.size());
    for (const auto& r : results) {
        CAPTURE(r);
        CHECK(contains(r, "was killed by signal 6 (SIGABRT); it said: terminate called after"));
        CHECK(contains(r, "no database at load time"));
    }
}
