# `mpirun -np R moe train` against one process on the language recipe (50 steps each),
# plus checkpoints saved by either resuming identically on both: scripts/distributed_check.py.
# The MoE recipe is compared while both runs route every batch identically (top-k routing
# is discontinuous: see the script); the dense variant is compared at every step.
if(MPIEXEC_EXECUTABLE)
  set(_check ${PROJECT_SOURCE_DIR}/scripts/distributed_check.py)
  set(_flags "--mpirun-flags=--allow-run-as-root --oversubscribe")
  foreach(np 2 4)
    add_test(NAME mpi.train_lm_matches_single_process.np${np}
             COMMAND python3 ${_check} --moe $<TARGET_FILE:moe_cli> --ranks ${np}
                     --out ${CMAKE_BINARY_DIR}/distributed_np${np}
                     --mpirun ${MPIEXEC_EXECUTABLE} ${_flags})
  endforeach()
  add_test(NAME mpi.train_lm_dense_matches_single_process.np2
           COMMAND python3 ${_check} --moe $<TARGET_FILE:moe_cli> --ranks 2
                   --out ${CMAKE_BINARY_DIR}/distributed_dense_np2 --resume-steps 3
                   --set "model.ffn=\"dense\"" --mpirun ${MPIEXEC_EXECUTABLE} ${_flags})
  set_tests_properties(mpi.train_lm_matches_single_process.np2
                       mpi.train_lm_matches_single_process.np4
                       mpi.train_lm_dense_matches_single_process.np2
                       PROPERTIES TIMEOUT 900 RUN_SERIAL TRUE)
  # moe.n_experts not divisible by the ranks: an error naming both before any step runs.
  add_test(NAME mpi.train_lm_experts_not_divisible.np2
           COMMAND ${MPIEXEC_EXECUTABLE} --allow-run-as-root --oversubscribe -np 2
                   $<TARGET_FILE:moe_cli> train ${PROJECT_SOURCE_DIR}/recipes/lm/moe_fortunes.json
                   --set moe.n_experts=3 --set moe.top_k=1
                   --set "out_dir=\"${CMAKE_BINARY_DIR}/distributed_bad_experts\"")
  set_tests_properties(mpi.train_lm_experts_not_divisible.np2 PROPERTIES
    PASS_REGULAR_EXPRESSION "moe.n_experts = 3 is not divisible by the number of ranks \\(2\\)"
    FAIL_REGULAR_EXPRESSION "step +1/" TIMEOUT 300 RUN_SERIAL TRUE)
endif()
