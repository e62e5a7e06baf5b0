# test_step_allocations interposes oneDNN's dnnl_sgemm and reaches the library's own with
# dlopen / dlsym (in libc since glibc 2.34, in libdl before).
target_link_libraries(test_step_allocations PRIVATE ${CMAKE_DL_LIBS})
