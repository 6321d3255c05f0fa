// lors_example.cpp: liblors from C++ needs nothing but the C header
// (docs/liblors.md, "C++ and Fortran"). Reads the first bytes and the
// size of a file on the grid through small RAII owners of the handles.
//
//   lors_example_cpp PATH
//
// Build: c++ -std=c++17 -o lors_example_cpp lors_example.cpp $(pkg-config --cflags --libs lors)

#include <lors.h>

#include <cstdio>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

// A failed call as an exception carrying the code and message.
struct lors_error : std::runtime_error {
    int code;
    lors_error(const char *what, int rc)
        : std::runtime_error(std::string(what) + ": " + lors_error_name(rc) + ": " +
                             lors_last_error()),
          code(rc) {}
};

void check(const char *what, int rc) {
    if (rc != LORS_OK) throw lors_error(what, rc);
}

struct client_free {
    void operator()(lors_client *c) const { lors_client_free(c); }
};
struct reader_close {
    void operator()(lors_reader *r) const { lors_close(r); }
};
using client_ptr = std::unique_ptr<lors_client, client_free>;
using reader_ptr = std::unique_ptr<lors_reader, reader_close>;

}  // namespace

int main(int argc, char **argv) {
    if (argc != 2) {
        std::fprintf(stderr, "usage: %s PATH\n", argv[0]);
        return 2;
    }
    try {
        lors_client *raw_client = nullptr;
        check("lors_client_from_env", lors_client_from_env(&raw_client));
        client_ptr client(raw_client);
        lors_reader *raw_reader = nullptr;
        check("lors_open", lors_open(client.get(), argv[1], nullptr, &raw_reader));
        reader_ptr reader(raw_reader);
        uint64_t size = 0;
        check("lors_size", lors_size(reader.get(), &size));
        std::vector<unsigned char> head(16);
        size_t got = 0;
        check("lors_read_at", lors_read_at(reader.get(), 0, head.data(), head.size(), &got));
        std::printf("%s: %llu bytes, first %zu:", argv[1], static_cast<unsigned long long>(size),
                    got);
        for (size_t i = 0; i < got; i++) std::printf(" %02x", head[i]);
        std::printf("\n");
    } catch (const lors_error &e) {
        std::fprintf(stderr, "lors_example_cpp: %s\n", e.what());
        return e.code;
    }
    return 0;
}
