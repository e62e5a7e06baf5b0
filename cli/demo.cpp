#include "cli/commands.h"
namespace moe::cli {
int run_demo(int, char**) { return 1; }
int run_train(int, char**) { return 1; }
}  // namespace moe::cli
