from xrerank.cli import main

main()
