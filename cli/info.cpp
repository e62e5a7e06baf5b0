// `moe info FILE`: lists a safetensors file's metadata keys and tensors.
#include <cstdio>
#include <cstring>

#include "cli/commands.h"
#include "io/safetensors.h"

namespace moe::cli {

int run_info(int argc, char** argv) {
    if (argc != 2 || !std::strcmp(argv[1], "--help")) {
        std::fprintf(argc == 2 ? stdout : stderr,
                     "usage: moe info FILE.safetensors\n\n"
                     "Validates the file and lists its metadata keys and tensors.\n");
        return argc == 2 ? 0 : 2;
    }
    io::SafetensorsFile f(argv[1]);
    for (const auto& [key, value] : f.metadata())
        std::printf("metadata %-20s %zu bytes\n", key.c_str(), value.size());
    size_t total = 0;
    for (const auto& name : f.names()) {
        const auto& i = f.info(name);
        std::printf("%-40s %-5s %s\n", name.c_str(), std::string(dtype_name(i.dtype)).c_str(),
                    i.shape.str().c_str());
        total += size_t(i.shape.numel());
    }
    std::printf("%zu tensors, %zu values\n", f.names().size(), total);
    return 0;
}

}  // namespace moe::cli
