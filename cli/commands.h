// One entry point per subcommand; each takes argv starting at the subcommand's name.
#pragma once

namespace moe::cli {

int run_demo(int argc, char** argv);
int run_train(int argc, char** argv);
int run_info(int argc, char** argv);
int run_eval(int argc, char** argv);
int run_inspect(int argc, char** argv);
int run_generate(int argc, char** argv);
int run_classify(int argc, char** argv);
int run_make_synthetic(int argc, char** argv);

// Vision models' eval and inspect (eval.cpp and inspect.cpp hand over to them when the
// run named on the command line is a vision model's, see names_vision_run).
int run_vision_eval(int argc, char** argv);
int run_vision_inspect(int argc, char** argv);
bool names_vision_run(int argc, char** argv);

// Multi-task models' eval and inspect (handed over likewise), and `moe score`.
int run_multitask_eval(int argc, char** argv);
int run_multitask_inspect(int argc, char** argv);
bool names_multitask_run(int argc, char** argv);
int run_score(int argc, char** argv);

}  // namespace moe::cli
