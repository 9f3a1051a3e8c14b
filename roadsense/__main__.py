from roadsense.cli import main

main()
