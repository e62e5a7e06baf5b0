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
endif()
