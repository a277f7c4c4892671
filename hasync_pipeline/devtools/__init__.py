"""Tools for tests and benchmarks (a throwaway MariaDB server); nothing the service runs imports them."""
