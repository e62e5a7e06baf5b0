# The language-recipe experiments at a tiny size: every command they use (train, eval,
# inspect, info) runs end to end on the real corpus, and the tables are produced.
add_test(NAME lm_experiments_small
         COMMAND /usr/bin/python3 ${PROJECT_SOURCE_DIR}/scripts/lm_experiments.py --small
                 --out ${CMAKE_BINARY_DIR}/experiments_small --moe $<TARGET_FILE:moe_cli>)
set_tests_properties(lm_experiments_small PROPERTIES TIMEOUT 600)

# The multi-task experiments at a tiny size (2 seeds, 20 steps) on the synthetic tasks: moe
# make-synthetic, train, eval and inspect run end to end for every architecture and the table
# is printed. (Adult and MovieLens need scripts/prepare_multitask_data.py, which downloads.)
add_test(NAME multitask_experiments_small
         COMMAND /usr/bin/python3 ${PROJECT_SOURCE_DIR}/scripts/multitask_experiments.py
                 synthetic --small --out ${CMAKE_BINARY_DIR}/multitask_experiments_small
                 --moe $<TARGET_FILE:moe_cli>)
set_tests_properties(multitask_experiments_small PROPERTIES TIMEOUT 600)
