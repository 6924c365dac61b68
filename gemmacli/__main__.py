from gemmacli.cli import main

main()
