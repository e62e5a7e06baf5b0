// One entry point per subcommand; each takes argv starting at the subcommand's name.
#pragma once

namespace moe::cli {

int run_demo(int argc, char** argv);
int run_train(int argc, char** argv);
int run_info(int argc, char** argv);
int run_eval(int argc, char** argv);
int run_inspect(int argc, char** argv);
int run_generate(int argc, char** argv);

}  // namespace moe::cli
